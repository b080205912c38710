"""Classifier models: the built-ins and their weights (imported or fetched), users' uploads, loading and warming."""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from saliency_site.errors import InputError, StateError

from .. import weights_fetch
from ..core import custom, registry, zoo
from ..core.handle import Classifier
from ..core.wrap import feature_layout_of
from ..models import ClassifierModel
from .removal import delete_files_on_commit, explanation_set_delete

logger = logging.getLogger(__name__)

#: Largest class-names file accepted (bytes): 100 000 names of 40 characters.
MAX_CLASS_NAMES_BYTES = 4 * 1024 * 1024


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
    from ..tasks import fetch_weights   # function-local: the tasks call these services (a real cycle)

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
    delete_files_on_commit([model.weights_file])
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


