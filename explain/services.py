"""Writes and side effects of the explain app.

Every function here is keyword-only and named ``<entity>_<action>``. Domain errors are
``ValueError`` subclasses (the core's ``WeightsMissing``, ``WeightsInvalid``, ``ImageError``,
parameter validation, and the project's ``InputError``/``NotAvailable``); the API maps them to 4xx in one place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from saliency_site.errors import InputError, NotAvailable

from .core import custom, imaging, registry, zoo
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


def _describe_builtin(name: str) -> dict:
    spec = zoo.get_spec(name)
    module = spec.build(1000)
    return {"layers": [n for n, _ in module.named_modules() if n]}


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


def classifier_model_layers_ensure(*, model: ClassifierModel) -> ClassifierModel:
    """Record the hookable layers of a built-in the first time a form needs them (builds the net once)."""
    if not model.layers and model.is_builtin:
        model.layers = _describe_builtin(model.builtin_key)["layers"]
        model.save(update_fields=["layers", "updated_at"])
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
    from .tasks import run_job

    def send() -> None:
        try:
            run_job.delay(job.pk)
        except Exception:
            logger.exception("could not queue job %s", job.pk)
            Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED, finished_at=timezone.now(),
                                                 error="the job queue is unreachable; try again in a moment")

    transaction.on_commit(send)


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

    jobs = []
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
            _enqueue(existing)
        if existing not in jobs:
            jobs.append(existing)
    return jobs


def _input_for(explanation_set: ExplanationSet, classifier, region: str = "crop"):
    image = imaging.load_image(explanation_set.image.file.path)
    x, geometry = imaging.preprocess(image, classifier, region=region)
    return x, geometry


def _top_k(probabilities, class_names, k: int = 5) -> list[dict]:
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return [{"index": int(i), "name": class_names[int(i)], "probability": float(v)} for v, i in zip(values, indices)]


def job_run(*, job: Job, worker: str = "") -> Job:
    """Do the job's work on this worker: a prediction or one map. Failures are recorded on the row.

    A job delivered again after its worker died mid-way runs again, up to ``Job.MAX_ATTEMPTS``
    starts; then it fails with the reason (a map that kills its worker each time, out of memory
    say, must not take every worker down in turn). A lost database connection is raised for
    the task to retry.
    """
    if job.is_finished:
        return job
    if job.attempts >= Job.MAX_ATTEMPTS:
        job.mark_failed(f"the worker stopped while computing this {job.get_kind_display().lower()} "
                        f"{job.attempts} times (out of memory?); not tried again")
        return job
    job.mark_running(worker)
    try:
        if job.kind == Job.Kind.PREDICT:
            _run_prediction(job)
        else:
            _run_explanation(job)
    except (OperationalError, InterfaceError):
        raise  # the database went away: the task retries; marking the row would fail anyway
    except ValueError as error:  # domain errors: the user sees the message
        logger.info("job %s failed: %s", job.pk, error)
        job.mark_failed(str(error))
    except Exception as error:
        logger.exception("job %s crashed", job.pk)
        job.mark_failed(f"internal error: {type(error).__name__}: {error}")
    return job


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
        if alive is not None and alive.runs("explain.tasks.run_job", pk):
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
    from .core.engine import explain

    explanation_set = job.explanation_set
    classifier = classifier_load(model=explanation_set.model)
    job.mark_progress(0.2)
    x, geometry = _input_for(explanation_set, classifier, job.region)
    enhance = (job.enhance_params or True) if job.enhance else None
    [result] = explain(classifier, x[None], job.method_key, targets=[job.target], params=job.params,
                       enhance=enhance, seed=0)
    job.mark_progress(0.9)
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
