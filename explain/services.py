"""Writes and side effects of the explain app.

Every function here is keyword-only and named ``<entity>_<action>``. Domain errors are
``ValueError`` subclasses (the core's ``WeightsMissing``, ``WeightsInvalid``, ``ImageError``,
parameter validation, and the project's ``InputError``/``NotAvailable``); the API maps them to 4xx in one place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from saliency_site.errors import InputError, NotAvailable, StateError

from . import job_events, weights_fetch
from .core import custom, imaging, registry, zoo
from .core.engine import explain, explain_many, shared_pass_key
from .core.handle import Classifier
from .core.wrap import feature_layout_of
from .core.enhance import resolve_enhance_params
from .models import ClassifierModel, ExplanationSet, InputImage, Job, MethodSetting

logger = logging.getLogger(__name__)

#: Largest class-names file accepted (bytes): 100 000 names of 40 characters.
MAX_CLASS_NAMES_BYTES = 4 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Sample photographs shipped with scikit-image (offline).

SAMPLES: dict[str, str] = {
    "chelsea": "Chelsea the cat",
    "coffee": "Cup of coffee",
    "astronaut": "Astronaut",
    "rocket": "Rocket launch",
}


def _sample_image(key: str):
    from PIL import Image
    import skimage.data

    if key not in SAMPLES:
        raise InputError(f"unknown sample {key!r}; choose one of {sorted(SAMPLES)}")
    return Image.fromarray(getattr(skimage.data, key)()).convert("RGB")


# ---------------------------------------------------------------------------------------------
# Models


def _architecture_classifier(model: ClassifierModel) -> Classifier:
    """The model's architecture with random weights: all the engine's support checks look at
    (family, feature layout, input size), without reading the weights."""
    if model.is_builtin:
        clf = zoo.random_classifier(model.builtin_key)
    else:
        module = zoo.ready_for_inference(custom.build_module(model.architecture, model.num_classes), None)
        pre = model.preprocessing or {}
        clf = Classifier(
            name=model.name, module=module, family=model.family,
            class_names=tuple(model.class_names) or tuple(f"class {i}" for i in range(model.num_classes)),
            default_layers=dict(model.default_layers), input_size=int(pre.get("input_size", 224)),
            resize_size=int(pre.get("resize_size", 256)), feature_layout=feature_layout_of(module, model.family),
        )
    return dataclasses.replace(clf, name=model.name)


@transaction.atomic
def builtin_models_sync() -> list[ClassifierModel]:
    """Create or update one row per built-in model, with whether its weights are on this machine."""
    rows = []
    for name, spec in zoo.BUILTIN_MODELS.items():
        path = zoo.weights_file(name)
        row, _ = ClassifierModel.objects.update_or_create(
            owner=None,
            builtin_key=name,
            defaults={
                "name": spec.label,
                "architecture": name,
                "family": spec.family,
                "num_classes": 1000,
                "class_names": list(zoo.imagenet_class_names()),
                "weights_present": path is not None,
                "weights_sha256": zoo.sha256_of(path) if path is not None else "",
                "default_layers": dict(spec.default_layers),
                "preprocessing": {"mean": list(spec.mean), "std": list(spec.std),
                                  "input_size": spec.input_size, "resize_size": spec.resize_size},
            },
        )
        rows.append(row)
    return rows


def builtin_weights_import(*, model: ClassifierModel, weights) -> ClassifierModel:
    """Install an operator's weights file for a built-in model (checked like ``manage.py import_weights``).

    The file is checked against the architecture and written as ``.safetensors`` into the
    weights folder; the row then reports the weights as present. Raises ``WeightsInvalid``.
    """
    if not model.is_builtin:
        raise InputError("weights can be imported for built-in models only; upload your own model instead")
    original = Path(getattr(weights, "name", "weights.pth") or "weights.pth").name
    suffix = ".safetensors" if original.endswith(".safetensors") else ".pth"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"import{suffix}"
        with open(path, "wb") as out:
            for chunk in (weights.chunks() if hasattr(weights, "chunks") else [weights.read()]):
                out.write(chunk)
        zoo.import_weights(model.builtin_key, path)
    builtin_models_sync()
    model.refresh_from_db()
    logger.info("imported weights for built-in %s (sha256 %s)", model.builtin_key, model.weights_sha256[:12])
    return model


#: A fetch marked queued or running whose record has not moved for this long is taken as lost
#: (its worker died): an operator may ask again.
FETCH_STALE_SECONDS = 300
_FETCH_PROGRESS_EVERY_S = 1.0


def _fetch_record(model: ClassifierModel, **fields) -> None:
    record = {**(model.weights_fetch or {}), **fields, "updated_at": timezone.now().isoformat()}
    model.weights_fetch = record
    ClassifierModel.objects.filter(pk=model.pk).update(weights_fetch=record)


def _fetch_in_flight(model: ClassifierModel) -> bool:
    record = model.weights_fetch or {}
    if record.get("status") not in ("queued", "running"):
        return False
    try:
        updated = datetime.fromisoformat(record["updated_at"])
    except (KeyError, TypeError, ValueError):
        return False
    return (timezone.now() - updated).total_seconds() < FETCH_STALE_SECONDS


def builtin_weights_fetch_request(*, model: ClassifierModel, requested_by=None) -> ClassifierModel:
    """Queue the download of a built-in's published weights on a worker (the ``default`` queue).

    Refused where the weights are present already or a fetch of them is under way.
    """
    from .tasks import fetch_weights

    if not model.is_builtin:
        raise InputError("weights can be fetched for built-in models only; upload your own model instead")
    weights_fetch.source_for(model.builtin_key)  # a clear error now for a model with nothing to fetch
    with transaction.atomic():
        model = ClassifierModel.objects.select_for_update().get(pk=model.pk)
        if model.weights_present:
            raise StateError(f"the weights of {model.name} are installed already")
        if _fetch_in_flight(model):
            raise StateError(f"the weights of {model.name} are being fetched already")
        # The worker fetches through the mirror the operator saw configured when asking.
        _fetch_record(model, status="queued", progress=0.0, message="waiting for a worker",
                      requested_by=getattr(requested_by, "username", ""), mirror=settings.WEIGHTS_MIRROR)

        def send() -> None:
            try:
                fetch_weights.delay(model.pk)
            except Exception:
                logger.exception("could not queue the weights fetch of %s", model.builtin_key)
                _fetch_record(model, status="failed", message="the job queue is unreachable; try again in a moment")

        transaction.on_commit(send)
    return model


def builtin_weights_fetch(*, model: ClassifierModel, force: bool = False, mirror: str | None = None,
                          progress: Callable[[int, int | None], None] | None = None) -> ClassifierModel:
    """Download, check and install the published weights of a built-in, here and now (the command
    and the worker's task). ``mirror`` (default ``SALIENCY_WEIGHTS_MIRROR``) replaces the origin. The row records the
    state and, at the end, where the file came from and how it was checked; a failure is recorded
    and raised (``NotAvailable``, ``WeightsInvalid``), with nothing installed."""
    if not model.is_builtin:
        raise InputError("weights can be fetched for built-in models only; upload your own model instead")
    if model.weights_present and not force:
        raise StateError(f"the weights of {model.name} are installed already (fetch again with --force)")
    source = weights_fetch.source_for(model.builtin_key)
    mirror = settings.WEIGHTS_MIRROR if mirror is None else mirror
    _fetch_record(model, status="running", progress=0.0, message=f"downloading {source.origin}",
                  url="", sha256="", checksum="", mirror=mirror)
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        if progress:
            progress(done, total)
        now = time.monotonic()
        if total and now - last[0] >= _FETCH_PROGRESS_EVERY_S:
            last[0] = now
            _fetch_record(model, progress=round(done / total, 3))

    try:
        result = weights_fetch.fetch_weights(model.builtin_key, mirror=mirror, source=source, progress=report)
    except ValueError as error:
        _fetch_record(model, status="failed", message=str(error))
        raise
    _fetch_record(model, status="done", progress=1.0, url=result.url, sha256=result.sha256,
                  checksum=result.checksum_note, bytes=result.bytes,
                  message=f"installed from {result.url} ({result.checksum_note})")
    builtin_models_sync()
    model.refresh_from_db()
    return model


def classifier_model_layers_ensure(*, model: ClassifierModel) -> ClassifierModel:
    """Record the hookable layers of a built-in, and for every model which methods its architecture
    supports (the engine's reasons, ``explain.core.method_support``), the first time a form or a
    listing needs them: the net is built once (random weights), then the row answers. Recorded
    again when the registered methods change."""
    if model.layers and set(model.method_support) == set(registry.method_keys()):
        return model
    clf = _architecture_classifier(model)
    fields = ["method_support", "updated_at"]
    if not model.layers:
        model.layers = clf.hookable_layers()
        fields.append("layers")
    model.method_support = {key: reason or "" for key, reason in registry.method_support(clf).items()}
    model.save(update_fields=fields)
    return model


def class_names_read(upload) -> str:
    """The text of an uploaded class-names file (UTF-8, at most ``MAX_CLASS_NAMES_BYTES``)."""
    data = upload.read(MAX_CLASS_NAMES_BYTES + 1)
    if len(data) > MAX_CLASS_NAMES_BYTES:
        raise InputError(f"the class-names file is larger than {MAX_CLASS_NAMES_BYTES // 2**20} MB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the class-names file is not UTF-8 text; save it as UTF-8, one name per line") from None


def classifier_model_upload(*, owner, name: str, architecture: str, weights, class_names_text: str | None = None
                            ) -> ClassifierModel:
    """Validate an uploaded weights file for ``architecture`` and keep it as the owner's model.

    ``weights`` is a Django ``UploadedFile`` (or any file object with ``chunks()``/``read()``).
    Checks, before anything is saved: the name is free, the file loads without running code,
    its keys and shapes fit, the class list matches the head, one forward pass works.
    Raises ``WeightsInvalid``/``InputError``/``ValueError`` whose message says what is wrong.
    """
    name = (name or "").strip()
    if not name:
        raise InputError("give the model a name")
    if len(name) > 100:
        raise InputError("a model name has at most 100 characters")
    custom.get_architecture(architecture)
    if ClassifierModel.objects.filter(owner=owner, name=name).exists():
        raise InputError(f"you already have a model called {name!r}; choose another name")
    size = getattr(weights, "size", None)
    if size is not None and size > settings.MAX_WEIGHTS_UPLOAD_BYTES:
        raise InputError(f"the weights file is {size / 2**20:.0f} MB; at most "
                         f"{settings.MAX_WEIGHTS_UPLOAD_BYTES / 2**20:.0f} MB are accepted")
    if class_names_text is not None and len(class_names_text) > MAX_CLASS_NAMES_BYTES:
        raise InputError(f"the class-names file is larger than {MAX_CLASS_NAMES_BYTES // 2**20} MB")
    class_names = custom.parse_class_names(class_names_text) if class_names_text is not None else None
    original = Path(getattr(weights, "name", "weights.pth") or "weights.pth").name
    suffix = ".safetensors" if original.endswith(".safetensors") else ".pth"
    with tempfile.TemporaryDirectory() as tmp:
        # Named as the user's file, so that error messages name the file they chose.
        path = Path(tmp) / (original if original.endswith((".pth", ".pt", ".bin", suffix)) else original + suffix)
        with open(path, "wb") as out:
            for chunk in (weights.chunks() if hasattr(weights, "chunks") else [weights.read()]):
                out.write(chunk)
        info = custom.inspect_upload(architecture, path, class_names)
    row = ClassifierModel(
        owner=owner, name=name, architecture=architecture, family=info.family,
        num_classes=info.num_classes, class_names=list(info.class_names), weights_present=True,
        layers=info.layers, default_layers=info.default_layers, preprocessing=info.preprocessing,
    )
    relative = row.weights_file.field.generate_filename(row, "weights.safetensors")
    target = Path(settings.MEDIA_ROOT) / relative
    row.weights_sha256 = custom.save_weights(info.state, target)
    row.weights_file.name = relative
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        target.unlink(missing_ok=True)
        raise InputError(f"you already have a model called {name!r}; choose another name") from None
    logger.info("user %s uploaded model %r (%s, %d classes)", owner.pk, name, architecture, info.num_classes)
    return row


def classifier_model_rename(*, model: ClassifierModel, name: str) -> ClassifierModel:
    if model.is_builtin:
        raise InputError("built-in models cannot be renamed")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InputError("a model name has 1 to 100 characters")
    if ClassifierModel.objects.filter(owner=model.owner, name=name).exclude(pk=model.pk).exists():
        raise InputError(f"you already have a model called {name!r}; choose another name")
    model.name = name
    model.save(update_fields=["name", "updated_at"])
    return model


@transaction.atomic
def classifier_model_delete(*, model: ClassifierModel) -> None:
    if model.is_builtin:
        raise InputError("built-in models cannot be deleted")
    for explanation_set in model.explanation_sets.all():
        explanation_set_delete(explanation_set=explanation_set)
    _delete_files_on_commit([model.weights_file])
    model.delete()


def classifier_load(*, model: ClassifierModel, device=None):
    """The model's :class:`Classifier`, cached per worker process (built-in zoo or an upload)."""
    if model.is_builtin:
        return zoo.load_classifier(model.builtin_key, device=device)
    if not model.weights_file:
        raise zoo.WeightsMissing(f"{model.name} has no weights file")
    return custom.custom_classifier(
        name=model.name, architecture=model.architecture, weights_path=Path(model.weights_file.path),
        class_names=model.class_names, default_layers=model.default_layers,
        preprocessing=model.preprocessing, checksum=model.weights_sha256, device=device,
    )


def classifiers_warm(*, limit: int) -> dict[str, float]:
    """Load the first ``limit`` built-in models whose weights are here (by name, as the Explain
    page lists them) into this process's cache and run one forward pass through each, so that
    the first prediction or map does not pay the load (~1–3 s on a CPU) or the first call's
    allocations. Returns the seconds each took; a model that fails to load is logged and skipped."""
    seconds: dict[str, float] = {}
    if limit <= 0:
        return seconds
    for model in ClassifierModel.objects.filter(owner=None, weights_present=True).order_by("name")[:limit]:
        started = time.perf_counter()
        try:
            classifier = classifier_load(model=model)
            size = classifier.input_size
            with torch.no_grad():
                classifier.module(torch.zeros(1, 3, size, size, device=classifier.device))
        except Exception as error:  # noqa: BLE001 - a warm-up never stops a worker
            logger.warning("could not warm %s: %s", model.builtin_key, error)
            continue
        seconds[model.builtin_key] = time.perf_counter() - started
        logger.info("warmed %s in %.2f s", model.builtin_key, seconds[model.builtin_key])
    return seconds


# ---------------------------------------------------------------------------------------------
# Method settings


def method_params_validate(*, model: ClassifierModel, method_key: str, params: Mapping[str, Any]) -> dict:
    """Validated parameter values (JSON-able) for ``method_key`` on ``model``; raise ``ValueError``."""
    cls = registry.get_method_class(method_key)
    known = {p.name: p for p in cls.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"method {method_key!r} has no parameter(s) {unknown}; accepted: {sorted(known) or 'none'}")
    out: dict[str, Any] = {}
    for key, raw in params.items():
        if raw is None or raw == "":
            continue  # "use the default"
        value = known[key].validate(raw)
        if known[key].kind == "layer":
            classifier_model_layers_ensure(model=model)
            if value not in model.layers:
                raise InputError(f"parameter 'layer': {model.name} has no layer {value!r}; pick one from the list")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def enhance_params_validate(*, params: Mapping[str, Any]) -> dict:
    cleaned = {k: v for k, v in params.items() if v is not None and v != ""}
    resolved = resolve_enhance_params(cleaned)
    return {k: resolved[k] for k in cleaned}


def method_setting_save(*, owner, model: ClassifierModel, method_key: str, params: Mapping[str, Any],
                        enhance_params: Mapping[str, Any] | None = None) -> MethodSetting:
    """Save (create or replace) ``owner``'s parameters for ``method_key`` on ``model``."""
    method_key = registry.get_method_class(method_key).key  # aliases store under the key
    clean = method_params_validate(model=model, method_key=method_key, params=params)
    clean_enhance = enhance_params_validate(params=enhance_params or {})
    setting, _ = MethodSetting.objects.update_or_create(
        owner=owner, model=model, method_key=method_key,
        defaults={"params": clean, "enhance_params": clean_enhance},
    )
    return setting


def method_setting_reset(*, owner, model: ClassifierModel, method_key: str) -> None:
    """Back to the built-in defaults for that method on that model."""
    MethodSetting.objects.filter(owner=owner, model=model, method_key=method_key).delete()


# ---------------------------------------------------------------------------------------------
# Images


def image_create(*, owner, upload=None, sample: str | None = None) -> InputImage:
    """Store an uploaded image (checked: decodable, not truncated, not huge) or a bundled sample.

    The original is re-encoded as PNG (nothing but pixels is kept) and a display JPEG of at
    most ``InputImage.DISPLAY_MAX`` pixels a side is made for the pages.
    """
    if (upload is None) == (sample is None):
        raise InputError("send either an image file or the name of a sample")
    if upload is not None:
        size = getattr(upload, "size", None)
        limit = settings.MAX_IMAGE_UPLOAD_BYTES  # the pixel limit is ``imaging.MAX_PIXELS``
        if size is not None and size > limit:
            raise imaging.ImageError(f"the image file is {size / 2**20:.1f} MB; at most {limit // 2**20} MB")
        image = imaging.load_image(upload)
        name = Path(getattr(upload, "name", "") or "upload").name[:200]
    else:
        image = _sample_image(sample)
        name = SAMPLES[sample]
    png = io.BytesIO()
    image.save(png, format="PNG")
    data = png.getvalue()
    display = image.copy()
    display.thumbnail((InputImage.DISPLAY_MAX, InputImage.DISPLAY_MAX))
    jpeg = io.BytesIO()
    display.save(jpeg, format="JPEG", quality=90)
    row = InputImage(owner=owner, name=name, width=image.width, height=image.height,
                     display_width=display.width, display_height=display.height,
                     sha256=hashlib.sha256(data).hexdigest())
    row.file.save("image.png", ContentFile(data), save=False)
    row.display_file.save("display.jpg", ContentFile(jpeg.getvalue()), save=False)
    row.save()
    return row


# ---------------------------------------------------------------------------------------------
# Explanation sets and jobs


def _enqueue(job: Job) -> None:
    """Send the job to the ``interactive`` queue once its row is committed (a worker must be able to read it)."""
    _enqueue_group([job])


def _enqueue_group(jobs: list[Job]) -> None:
    """Send jobs that share a pass as one task (``run_jobs``), a lone job as ``run_job``, on commit."""
    from .tasks import run_job, run_jobs

    pks = [job.pk for job in jobs]

    def send() -> None:
        try:
            if len(pks) == 1:
                run_job.delay(pks[0])
            else:
                run_jobs.delay(pks)
        except Exception:
            logger.exception("could not queue jobs %s", pks)
            Job.objects.filter(pk__in=pks).update(status=Job.Status.FAILED, finished_at=timezone.now(),
                                                  error="the job queue is unreachable; try again in a moment")
            job_events.announce(pks)

    transaction.on_commit(send)


def _shared_pass_groups(jobs: list[Job]) -> list[list[Job]]:
    """The jobs of one request grouped by the pass they can share (``engine.shared_pass_key``),
    in the order of each group's first job; a job that shares nothing is a group of one.

    The layer is the job's own choice or the model's default for the method's role: equal
    parameters mean an equal layer, without building the network here."""
    groups: dict[Any, list[Job]] = {}
    for job in jobs:
        method = registry.get_method(job.method_key)
        key = shared_pass_key(method, {"layer": job.params.get("layer")}, job.enhance or None)
        if key is not None:
            key = (key, job.target, job.region, json.dumps(job.params, sort_keys=True))
        groups.setdefault(("alone", job.pk) if key is None else key, []).append(job)
    return list(groups.values())


def _delete_files_on_commit(fields) -> None:
    paths = [Path(f.path) for f in fields if f]
    transaction.on_commit(lambda: [p.unlink(missing_ok=True) for p in paths])


def _require_weights(model: ClassifierModel) -> None:
    if not model.weights_present:
        raise NotAvailable(f"the weights of {model.name} are not installed on this server; "
                           "an operator can add them with `manage.py import_weights`")


@transaction.atomic
def explanation_set_create(*, owner, model: ClassifierModel, image: InputImage) -> ExplanationSet:
    """A new set for ``image`` on ``model``, with its prediction job queued."""
    _require_weights(model)
    explanation_set = ExplanationSet.objects.create(owner=owner, model=model, image=image)
    job = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.PREDICT)
    _enqueue(job)
    return explanation_set


@transaction.atomic
def explanation_jobs_create(*, explanation_set: ExplanationSet, target: int,
                            methods: Iterable[Mapping[str, Any]], region: str = "crop") -> list[Job]:
    """Queue one job per requested method (``{"key": ..., "enhance": bool}``) for class ``target``.

    The owner's saved settings for each method on this model are applied. ``region`` is what
    the maps cover: ``"crop"`` (the model's centre crop) or ``"whole"`` (the image resized
    without a crop; CNNs only). A map the set already has, or is computing, for the same
    request (method, class, enhancement, region and parameters) is not made twice: that job
    is returned instead.
    """
    model = explanation_set.model
    _require_weights(model)
    if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < model.num_classes:
        raise InputError(f"class {target!r} is out of range: {model.name} has classes 0…{model.num_classes - 1}")
    methods = list(methods)
    if not methods:
        raise InputError("choose at least one method")
    if region not in imaging.REGIONS:
        raise InputError(f"region must be one of {list(imaging.REGIONS)}, not {region!r}")
    if region == "whole":
        image = explanation_set.image
        reason = imaging.whole_image_refusal(model.family, image.width, image.height,
                                             int((model.preprocessing or {}).get("input_size", 224)))
        if reason:
            raise InputError(f"{model.name} cannot explain the whole image: {reason}")
    from .selectors import method_availability, method_setting_for

    classifier_model_layers_ensure(model=model)  # the engine's reasons for this architecture
    jobs, created = [], []
    for entry in methods:
        key = registry.get_method_class(str(entry.get("key", ""))).key
        reason = method_availability(model, key)
        if reason:
            raise InputError(reason)
        enhance = bool(entry.get("enhance", False))
        setting = method_setting_for(user=explanation_set.owner, model=model, method_key=key)
        request = {"method_key": key, "target": target, "enhance": enhance, "region": region,
                   "params": setting.params if setting else {},
                   "enhance_params": (setting.enhance_params if setting else {}) if enhance else {}}
        existing = (explanation_set.jobs.filter(kind=Job.Kind.EXPLAIN, **request)
                    .exclude(status=Job.Status.FAILED).order_by("created_at", "id").first())
        if existing is None:
            existing = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, **request)
            created.append(existing)
        if existing not in jobs:
            jobs.append(existing)
    for group in _shared_pass_groups(created):
        _enqueue_group(group)
    return jobs


def _input_for(explanation_set: ExplanationSet, classifier, region: str = "crop"):
    image = imaging.load_image(explanation_set.image.file.path)
    x, geometry = imaging.preprocess(image, classifier, region=region)
    return x, geometry


def _top_k(probabilities, class_names, k: int = 5) -> list[dict]:
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return [{"index": int(i), "name": class_names[int(i)], "probability": float(v)} for v, i in zip(values, indices)]


def _may_start(job: Job) -> bool:
    """Whether the job is to be computed now; one started too often is failed with the reason."""
    if job.is_finished:
        return False
    if job.attempts >= Job.MAX_ATTEMPTS:
        job.mark_failed(f"the worker stopped while computing this {job.get_kind_display().lower()} "
                        f"{job.attempts} times (out of memory?); not tried again")
        return False
    return True


def _record_failure(jobs: list[Job], error: Exception) -> None:
    if isinstance(error, ValueError):  # domain errors: the user sees the message
        logger.info("jobs %s failed: %s", [j.pk for j in jobs], error)
        message = str(error)
    else:
        logger.exception("jobs %s crashed", [j.pk for j in jobs])
        message = f"internal error: {type(error).__name__}: {error}"
    for job in jobs:
        job.mark_failed(message)


def job_run(*, job: Job, worker: str = "") -> Job:
    """Do the job's work on this worker: a prediction or one map. Failures are recorded on the row.

    A job delivered again after its worker died mid-way runs again, up to ``Job.MAX_ATTEMPTS``
    starts; then it fails with the reason (a map that kills its worker each time, out of memory
    say, must not take every worker down in turn). A lost database connection is raised for
    the task to retry.
    """
    if not _may_start(job):
        return job
    job.mark_running(worker)
    try:
        if job.kind == Job.Kind.PREDICT:
            _run_prediction(job)
        else:
            _run_explanation(job)
    except (OperationalError, InterfaceError):
        raise  # the database went away: the task retries; marking the row would fail anyway
    except Exception as error:  # noqa: BLE001 - recorded on the row, with the traceback logged
        _record_failure([job], error)
    return job


def jobs_run(*, jobs: list[Job], worker: str = "") -> list[Job]:
    """Maps of one set that share a pass (``_shared_pass_groups``), computed together on this worker.

    The pass runs once (``engine.explain_many``); each job is finished, with its own map, status
    and seconds, as soon as its map is derived, so pages show it at once. Jobs already finished
    (a redelivery) are skipped and one started too often is failed, as in :func:`job_run`; the
    rest are marked running together. A failure fails the jobs not yet finished with the reason.
    """
    if len(jobs) == 1:
        return [job_run(job=jobs[0], worker=worker)]
    todo = [job for job in jobs if _may_start(job)]
    if not todo:
        return jobs
    for job in todo:
        job.mark_running(worker)
    try:
        explanation_set = todo[0].explanation_set
        classifier = classifier_load(model=explanation_set.model)
        x, geometry = _input_for(explanation_set, classifier, todo[0].region)
        results = explain_many(classifier, x[None], [job.method_key for job in todo],
                               targets=[todo[0].target], params=[job.params for job in todo], seed=0)
        for index, [result] in results:
            _store_map(todo[index], result, classifier, geometry)
    except (OperationalError, InterfaceError):
        raise
    except Exception as error:  # noqa: BLE001 - recorded on the rows, with the traceback logged
        _record_failure([job for job in todo if not job.is_finished], error)
    return jobs


def _runs_job(alive, pk: int) -> bool:
    """Whether a live worker (``saliency_site.workers.Worker``) is computing job ``pk``, alone or in a group."""
    return alive.runs("explain.tasks.run_job", pk) or any(
        name == "explain.tasks.run_jobs" and isinstance(argument, (list, tuple)) and pk in argument
        for name, argument in alive.tasks)


def jobs_requeue_stale(*, live: Mapping[str, Any], stale_after: float, worker: str | None = None) -> dict[str, list[int]]:
    """Jobs marked running on a worker that is gone (not among ``live``, hostname -> an object
    with ``runs(task_name, argument)``, or alive without running it) and silent for
    ``stale_after`` seconds: queued again, or failed with the reason once they were started
    ``Job.MAX_ATTEMPTS`` times. Never left "running". ``worker`` limits the sweep to one
    worker's jobs (a worker that restarts under its old name: ``live={}``, ``stale_after=0``)."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    done: dict[str, list[int]] = {"requeued": [], "failed": []}
    stale = Job.objects.filter(status=Job.Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff))
    if worker is not None:
        stale = stale.filter(worker=worker)
    for pk, worker, attempts, heartbeat in stale.values_list("pk", "worker", "attempts", "heartbeat_at"):
        alive = live.get(worker)
        if alive is not None and _runs_job(alive, pk):
            continue  # a long map on a live worker
        # The status and heartbeat in the filter: a job that moved on meanwhile is left alone.
        row = Job.objects.filter(pk=pk, status=Job.Status.RUNNING, heartbeat_at=heartbeat)
        if attempts >= Job.MAX_ATTEMPTS:
            if row.update(status=Job.Status.FAILED, finished_at=timezone.now(),
                          error=f"its worker ({worker or 'unknown'}) stopped while computing it, {attempts} times; "
                                "not tried again"):
                done["failed"].append(pk)
        elif row.update(status=Job.Status.QUEUED, worker=""):
            done["requeued"].append(pk)
            _enqueue(Job(pk=pk))
    job_events.announce(done["requeued"] + done["failed"])
    if done["requeued"] or done["failed"]:
        logger.warning("jobs whose worker stopped: requeued %s, failed %s", done["requeued"], done["failed"])
    return done


def _finish(job: Job, **fields) -> None:
    for key, value in fields.items():
        setattr(job, key, value)
    job.status = Job.Status.DONE
    job.progress = 1.0
    job.finished_at = timezone.now()
    job.save()


def _run_prediction(job: Job) -> None:
    import torch

    explanation_set = job.explanation_set
    classifier = classifier_load(model=explanation_set.model)
    job.mark_progress(0.4)
    x, _ = _input_for(explanation_set, classifier)
    with torch.no_grad():
        logits = classifier.module(x[None].to(classifier.device)).float().cpu()[0]
    top = _top_k(torch.softmax(logits, dim=0), classifier.class_names)
    explanation_set.predictions = top
    explanation_set.save(update_fields=["predictions"])
    _finish(job, manifest={"model": classifier.name, "weights_checksum": classifier.weights_checksum,
                           "top5": top, "input_shape": [1, *x.shape]})


def _run_explanation(job: Job) -> None:
    explanation_set = job.explanation_set
    classifier = classifier_load(model=explanation_set.model)
    job.mark_progress(0.2)
    x, geometry = _input_for(explanation_set, classifier, job.region)
    enhance = (job.enhance_params or True) if job.enhance else None
    [result] = explain(classifier, x[None], job.method_key, targets=[job.target], params=job.params,
                       enhance=enhance, seed=0)
    job.mark_progress(0.9)
    _store_map(job, result, classifier, geometry)


def _store_map(job: Job, result, classifier, geometry) -> None:
    """Write the map files of ``result`` (an ``Explanation``) and finish the job."""
    explanation_set = job.explanation_set
    raw = result.saliency.numpy().astype(np.float32)
    image = explanation_set.image
    display = dataclasses.replace(geometry, height=image.display_height, width=image.display_width)
    shown = np.clip(display.to_original(raw), 0, None).astype("<f4")
    buffer = io.BytesIO()
    np.save(buffer, raw)
    job.raw_file.save(f"job-{job.pk}-raw.npy", ContentFile(buffer.getvalue()), save=False)
    job.map_file.save(f"job-{job.pk}-display.f32", ContentFile(shown.tobytes()), save=False)
    manifest = dict(result.manifest)
    manifest["class_name"] = classifier.class_names[result.target]
    manifest["probability"] = float(result.probabilities[result.target])
    manifest["region"] = {"mode": geometry.region, "box": [round(v, 2) for v in geometry.box()]}
    _finish(job, manifest=manifest, seconds=float(manifest.get("seconds", 0.0)), map_max=float(shown.max()))


@transaction.atomic
def explanation_set_delete(*, explanation_set: ExplanationSet) -> None:
    """Delete a set, its jobs and their map files."""
    _delete_files_on_commit([f for job in explanation_set.jobs.all() for f in (job.map_file, job.raw_file)])
    explanation_set.delete()


@transaction.atomic
def image_delete(*, image: InputImage) -> None:
    """Delete an image with every set made from it, and their files."""
    for explanation_set in image.explanation_sets.all():
        explanation_set_delete(explanation_set=explanation_set)
    _delete_files_on_commit([image.file, image.display_file])
    image.delete()
