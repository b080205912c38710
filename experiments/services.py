"""Writes and side effects of the experiments app: submit, schedule, run shards, cancel, aggregate.

Every public function is keyword-only and named ``<entity>_<action>``. Domain errors are
``ValueError`` subclasses (the project's ``InputError``, ``NotAvailable``, ``StateError``, the
core's ``PathNotAllowed``/``DatasetFormatError``, parameter validation); the API maps them to
4xx in one place.

How a run survives crashes: the run is split into shards (ranges of images) queued on the
``gpu`` queue with late acknowledgement, so a shard whose worker dies is delivered again.
A shard writes the records of one (image, method) unit in one transaction and skips the
units that already have records; the unique constraint on the record key turns a duplicate
execution into a no-op. A worker that restarts under the same name requeues the shards its
previous incarnation held (``shards_requeue_for_worker``), so a restarted site resumes at
once rather than after the broker's visibility timeout.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from explain import services as explain_services
from explain.core import registry
from explain.models import ClassifierModel
from saliency_site.errors import InputError, NotAvailable, StateError

from .core import datasets as ds
from .core.protocols import (
    InsertionDeletionProtocol,
    PerturbationProtocol,
    PointingProtocol,
    Preprocessing,
    Protocol,
    SanityProtocol,
    SegmentationProtocol,
    copy_protocol,
    get_protocol,
    protocol_from_dict,
)
from .models import Experiment, Record, Shard

logger = logging.getLogger(__name__)


#: A shard should take about this long, so a crash loses little and many workers share a run.
SHARD_TARGET_SECONDS = 300
#: Shard progress (and heartbeat) is written at most this often.
PROGRESS_EVERY_SECONDS = 2.0
#: Images per run at most (a whole ILSVRC val set is 50 000).
MAX_IMAGES = 100_000

# ---------------------------------------------------------------------------------------------
# Data sets


@dataclass(frozen=True)
class DatasetKind:
    """A data-set format the site reads: the path fields it needs and what its samples carry."""

    key: str
    label: str
    paths: tuple[str, ...]          # required path fields
    optional_paths: tuple[str, ...] = ()
    labels: bool = True             # image-level ground-truth classes
    objects: bool = False           # boxes or masks per class (pointing game)
    foreground: bool = False        # a foreground mask (segmentation)


DATASET_KINDS: dict[str, DatasetKind] = {k.key: k for k in (
    DatasetKind("sample-classification", "Bundled sample photos (classification)", ()),
    DatasetKind("sample-localisation", "Bundled localisation set (objects pasted at known places)", (),
                objects=True, foreground=True),
    DatasetKind("ilsvrc2012-val", "ILSVRC 2012 validation", ("images",), ("devkit", "solution_csv", "synsets"),
                objects=True),
    DatasetKind("voc2007", "PASCAL VOC 2007", ("root",), objects=True, foreground=True),
    DatasetKind("coco2014-val", "COCO 2014 validation", ("images", "annotations"), objects=True, foreground=True),
    DatasetKind("imagenet-segmentation", "ImageNet-Segmentation (gtsegs_ijcv.mat)", ("path",),
                labels=False, foreground=True),
)}


def _sample_cache_dir() -> Path:
    return Path(settings.DATA_DIR) / "samples"


def _dataset_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A normalised, JSON-able data-set request: ``{kind, paths, options, subset}``."""
    if not isinstance(raw, Mapping):
        raise InputError("dataset must be an object such as {\"kind\": \"sample-localisation\"}")
    kind = raw.get("kind")
    if kind not in DATASET_KINDS:
        raise InputError(f"unknown data set kind {kind!r}; choose one of {sorted(DATASET_KINDS)}")
    spec = DATASET_KINDS[kind]
    given = dict(raw.get("paths") or {})
    unknown = sorted(set(given) - set(spec.paths) - set(spec.optional_paths))
    if unknown:
        raise InputError(f"{kind} takes the path field(s) {list(spec.paths + spec.optional_paths)}, not {unknown}")
    missing = [p for p in spec.paths if not given.get(p)]
    if missing:
        raise InputError(f"{kind} needs the path field(s) {missing} (folders or files under the data roots)")
    paths = {k: str(v) for k, v in given.items() if v}
    options: dict[str, Any] = {}
    if kind == "sample-localisation":
        options["seed"] = int((raw.get("options") or {}).get("seed", 0))
        options["num_images"] = int((raw.get("options") or {}).get("num_images", 12))
    if kind == "voc2007":
        options["image_set"] = str((raw.get("options") or {}).get("image_set", "test"))
    requested = dict(raw.get("subset") or {})
    mode = requested.get("mode", "all")
    if mode == "all":
        subset = {"mode": "all"}
    elif mode in ("first", "random"):
        try:
            n = int(requested.get("n"))
        except (TypeError, ValueError):
            raise InputError(f"subset mode {mode!r} needs a positive number of images n") from None
        if n < 1:
            raise InputError(f"subset mode {mode!r} needs a positive number of images n, not {n}")
        subset = {"mode": mode, "n": n}
        if mode == "random":
            subset["seed"] = int(requested.get("seed", 0))
    else:
        raise InputError(f"subset mode must be 'all', 'first' or 'random', not {mode!r}")
    return {"kind": kind, "paths": paths, "options": options, "subset": subset}


def _dataset_read(spec: Mapping[str, Any]) -> ds.Dataset:
    kind, paths, options = spec["kind"], spec["paths"], spec.get("options", {})
    roots = settings.DATA_ROOTS
    if kind == "sample-classification":
        return ds.sample_dataset("classification", cache_dir=_sample_cache_dir())
    if kind == "sample-localisation":
        return ds.sample_dataset("localisation", cache_dir=_sample_cache_dir(), seed=options.get("seed", 0),
                                 num_images=options.get("num_images", 12))
    if kind == "ilsvrc2012-val":
        return ds.read_ilsvrc2012_val(paths["images"], allowed_roots=roots, devkit=paths.get("devkit"),
                                      solution_csv=paths.get("solution_csv"), synsets=paths.get("synsets"))
    if kind == "voc2007":
        return ds.read_voc2007(paths["root"], allowed_roots=roots, image_set=options.get("image_set", "test"))
    if kind == "coco2014-val":
        return ds.read_coco2014_val(paths["images"], paths["annotations"], allowed_roots=roots)
    return ds.read_imagenet_segmentation(paths["path"], allowed_roots=roots)


@functools.lru_cache(maxsize=4)
def _dataset_cached(spec_json: str) -> ds.Dataset:
    spec = json.loads(spec_json)
    dataset = _dataset_read(spec)
    subset = spec["subset"]
    if subset["mode"] == "first":
        dataset = dataset.subset(first=subset["n"])
    elif subset["mode"] == "random":
        dataset = dataset.subset(random=subset["n"], seed=subset.get("seed", 0))
    return dataset


def dataset_open(*, spec: Mapping[str, Any]) -> ds.Dataset:
    """The data set (subset applied) a normalised spec names; cached per process (a worker
    reads a VOC or ILSVRC index once, not once per shard)."""
    return _dataset_cached(json.dumps(spec, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# Methods (the explainer registry plus two baselines that live only here)

BASELINES: dict[str, str] = {
    "baseline_random": "Random map (baseline)",
    "baseline_centre": "Centre map (baseline)",
}


def baseline_map(key: str, height: int, width: int, *, seed: int) -> np.ndarray:
    """A model-independent ``height × width`` map: the floor every method should beat.

    ``baseline_random``: i.i.d. uniform values from ``seed`` (ties have probability 0).
    ``baseline_centre``: a Gaussian ``exp(−d² / 2σ²)`` of the distance ``d`` (pixels) to the
    image centre with ``σ = min(height, width) / 4`` (photographers centre their subjects,
    so pointing at the centre is a strong prior on many data sets).
    """
    if key == "baseline_random":
        return np.random.default_rng(seed).random((height, width)).astype(np.float32)
    if key == "baseline_centre":
        y, x = np.mgrid[0:height, 0:width]
        sigma = min(height, width) / 4
        d2 = (x - (width - 1) / 2) ** 2 + (y - (height - 1) / 2) ** 2
        return np.exp(-d2 / (2 * sigma ** 2)).astype(np.float32)
    raise InputError(f"unknown baseline {key!r}; choose one of {sorted(BASELINES)}")


def _method_entries(*, owner, model: ClassifierModel, methods: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Validated method slots; the owner's saved settings for each method on the model apply,
    parameters given here override them."""
    from explain.selectors import method_availability, method_setting_for

    if not methods:
        raise InputError("choose at least one method")
    out, seen = [], set()
    for raw in methods:
        if isinstance(raw, str):
            raw = {"key": raw}
        key = str(raw.get("key", ""))
        enhance = bool(raw.get("enhance", False))
        if key in BASELINES:
            entry = {"key": key, "label": BASELINES[key], "enhance": False, "params": {}, "enhance_params": {},
                     "baseline": True}
        else:
            try:
                cls = registry.get_method_class(key)
            except ValueError as error:
                raise InputError(f"{error}; or a baseline: {sorted(BASELINES)}") from None
            key = cls.key
            reason = method_availability(model, key)
            if reason:
                raise InputError(reason)
            setting = method_setting_for(user=owner, model=model, method_key=key)
            params = {**(setting.params if setting else {}), **dict(raw.get("params") or {})}
            enhance_params = {**(setting.enhance_params if setting else {}), **dict(raw.get("enhance_params") or {})}
            entry = {
                "key": key, "label": cls.label or key, "enhance": enhance,
                "params": explain_services.method_params_validate(model=model, method_key=key, params=params),
                "enhance_params": explain_services.enhance_params_validate(params=enhance_params) if enhance else {},
                "baseline": False,
            }
        ident = (entry["key"], entry["enhance"], json.dumps(entry["params"], sort_keys=True))
        if ident in seen:
            raise InputError(f"{entry['label']}{' + enhancement' if enhance else ''} is listed twice")
        seen.add(ident)
        out.append({"slot": len(out), **entry})
    return out


# ---------------------------------------------------------------------------------------------
# Protocols


def _protocol(raw: str | Mapping[str, Any]) -> Protocol:
    """A built-in by name, a copy ``{"copy_of", "name", "params"}``, or a full ``to_dict()``."""
    if isinstance(raw, str):
        return get_protocol(raw)
    if not isinstance(raw, Mapping):
        raise InputError("each protocol is a name or an object")
    if "copy_of" in raw:
        return copy_protocol(str(raw["copy_of"]), str(raw.get("name", "")), **dict(raw.get("params") or {}))
    return protocol_from_dict(raw)


def _check_protocol_fits(protocol: Protocol, kind: DatasetKind, dataset: ds.Dataset, model: ClassifierModel) -> None:
    prep = getattr(protocol, "preprocessing", None)
    if model.family == "vit" and prep is not None and prep.resize == "keep-aspect":
        # refused here, not image by image: the run would finish "done" with every record failed
        side = (model.preprocessing or {}).get("input_size", 224)
        raise InputError(
            f"{protocol.name} resizes each image keeping its aspect ratio (shorter side {prep.size}, nothing "
            f"cropped), so the model gets non-square inputs, but {model.name} is a ViT, which takes square "
            f"{side}×{side} inputs only; choose a CNN, or a copy of the protocol with square preprocessing "
            f"(params {{\"preprocessing\": {{\"resize\": \"square\", \"size\": {side}}}}})")
    same_classes = dataset.num_classes == model.num_classes
    if isinstance(protocol, PointingProtocol):
        if not kind.objects:
            raise InputError(f"{protocol.name} needs boxes or masks per class; {kind.label} has none")
        if not same_classes:
            raise InputError(f"{protocol.name} explains the ground-truth classes of {kind.label} "
                             f"({dataset.num_classes} classes) but {model.name} has {model.num_classes}; "
                             "use a model fine-tuned on this data set's classes")
    if isinstance(protocol, SegmentationProtocol) and not kind.foreground:
        raise InputError(f"{protocol.name} needs foreground masks; {kind.label} has none")
    needs_label = (isinstance(protocol, PerturbationProtocol)
                   or getattr(protocol, "explain", None) == "target")
    if needs_label:
        if not kind.labels:
            raise InputError(f"{protocol.name} measures against ground-truth labels; {kind.label} has none")
        if not same_classes:
            raise InputError(f"{protocol.name} compares predictions with {kind.label}'s labels "
                             f"({dataset.num_classes} classes) but {model.name} has {model.num_classes}")


# ---------------------------------------------------------------------------------------------
# Estimates from measured per-image costs

#: Seconds per image on one CPU core for EfficientNet-Lite0 at 224×224, used until this site
#: has measured the method itself (then the measurements win).
METHOD_PRIOR_SECONDS: dict[str, float] = {
    "gradcam": 0.15, "gradcampp": 0.15, "xgradcam": 0.15, "layercam": 0.15, "scorecam": 12.0,
    "groupcam": 1.0, "cameras": 15.0, "msgcam": 4.0, "rise": 20.0, "lrp": 0.6,
    "transformer_attribution": 1.0, "partial_lrp": 1.0, "attention_rollout": 0.3, "gradient_rollout": 0.5,
}
FORWARD_PRIOR_SECONDS = 0.02
ENHANCE_FACTOR = 26          # the default enhancement explains 25 windows plus the full image


def _prior_seconds(entry: Mapping[str, Any], protocol: Protocol, model: ClassifierModel) -> float:
    if entry.get("baseline"):
        map_cost = FORWARD_PRIOR_SECONDS
    else:
        map_cost = METHOD_PRIOR_SECONDS.get(entry["key"], 1.0) * (ENHANCE_FACTOR if entry.get("enhance") else 1)
    if isinstance(protocol, InsertionDeletionProtocol):
        size = protocol.preprocessing.size
        return map_cost + 2 * (math.ceil(size * size / protocol.step) + 1) * FORWARD_PRIOR_SECONDS
    if isinstance(protocol, PerturbationProtocol):
        return len(protocol.explain) * (map_cost + (2 * len(protocol.fractions) - 1) * FORWARD_PRIOR_SECONDS)
    if isinstance(protocol, SanityProtocol):
        layers = max(1, len(model.layers) // 3)
        return map_cost * (1 + layers * len(protocol.modes))
    if isinstance(protocol, PointingProtocol):
        return 1.5 * map_cost   # about one and a half classes per image on VOC/COCO
    return map_cost


def _measured_seconds(model: ClassifierModel, entry: Mapping[str, Any], protocol_name: str) -> tuple[float, int] | None:
    """Mean seconds per image of recent successful records with this model, method and protocol."""
    rows = list(
        Record.objects.filter(experiment__model=model, method_key=entry["key"], enhance=bool(entry.get("enhance")),
                              protocol=protocol_name, ok=True)
        .order_by("-id").values_list("experiment_id", "image_index", "seconds")[:400]
    )
    if not rows:
        return None
    per_image: dict[tuple[int, int], float] = {}
    for experiment_id, image_index, seconds in rows:
        per_image[(experiment_id, image_index)] = per_image.get((experiment_id, image_index), 0.0) + seconds
    return float(np.mean(list(per_image.values()))), len(per_image)


def experiment_estimate(*, model: ClassifierModel, methods: Sequence[Mapping[str, Any]],
                        protocols: Sequence[Mapping[str, Any]], num_images: int) -> tuple[float, dict]:
    """Estimated seconds for the run on one worker, and the per-image basis of the estimate."""
    basis: dict[str, dict] = {}
    per_image = 0.0
    for entry in methods:
        for pdata in protocols:
            protocol = protocol_from_dict(pdata)
            measured = _measured_seconds(model, entry, protocol.name)
            if measured is not None:
                seconds, n = measured
                source = f"measured on {n} images"
            else:
                seconds, source = _prior_seconds(entry, protocol, model), "prior (not measured here yet)"
            basis[f"{entry['slot']}|{protocol.name}"] = {"seconds_per_image": seconds, "source": source}
            per_image += seconds
    return per_image * num_images, basis


# ---------------------------------------------------------------------------------------------
# Creating, scheduling, starting, cancelling


def _model_snapshot(model: ClassifierModel) -> dict:
    return {
        "id": model.pk, "name": model.name, "builtin_key": model.builtin_key, "architecture": model.architecture,
        "family": model.family, "num_classes": model.num_classes, "weights_sha256": model.weights_sha256,
    }


@transaction.atomic
def experiment_create(
    *,
    owner,
    name: str,
    model: ClassifierModel,
    dataset: Mapping[str, Any],
    methods: Sequence[Mapping[str, Any] | str],
    protocols: Sequence[str | Mapping[str, Any]],
    seed: int = 0,
    shard_size: int | None = None,
    start_at: datetime | None = None,
    after_current: bool = False,
    submit: bool = True,
) -> Experiment:
    """Validate and store a run with its estimate; then queue it, schedule it, or (``submit=False``)
    leave it for :func:`experiment_run_sync`.

    ``start_at`` (aware datetime) schedules the start; ``after_current`` starts it once the
    owner's queued and running runs have finished (runs so marked start one at a time, in
    submission order).
    """
    name = (name or "").strip()
    if not name:
        raise InputError("give the run a name")
    if not model.weights_present:
        raise NotAvailable(f"the weights of {model.name} are not installed on this server; "
                           "an operator can add them with `manage.py import_weights`")
    spec = _dataset_spec(dataset)
    data = dataset_open(spec=spec)
    if len(data) == 0:
        raise InputError("the data set has no images")
    if len(data) > MAX_IMAGES:
        raise InputError(f"the data set has {len(data)} images; take a subset of at most {MAX_IMAGES}")
    entries = _method_entries(owner=owner, model=model, methods=list(methods))
    if not protocols:
        raise InputError("choose at least one protocol")
    chosen: list[Protocol] = []
    for raw in protocols:
        protocol = _protocol(raw)
        if any(p.name == protocol.name for p in chosen):
            raise InputError(f"protocol {protocol.name} is listed twice")
        _check_protocol_fits(protocol, DATASET_KINDS[spec["kind"]], data, model)
        chosen.append(protocol)
    pdicts = [p.to_dict() for p in chosen]
    estimate, basis = experiment_estimate(model=model, methods=entries, protocols=pdicts, num_images=len(data))
    if shard_size is None:
        per_image = estimate / len(data)
        shard_size = int(min(1000, max(1, SHARD_TARGET_SECONDS // max(per_image, 1e-3))))
    if not isinstance(shard_size, int) or shard_size < 1:
        raise InputError(f"shard_size must be a positive number of images, not {shard_size!r}")
    if start_at is not None and timezone.is_naive(start_at):
        raise InputError("start_at needs a time zone (e.g. 2026-11-27T02:00:00+00:00)")
    experiment = Experiment.objects.create(
        owner=owner, name=name[:200], model=model, model_snapshot=_model_snapshot(model),
        dataset=spec, dataset_info=data.describe(), methods=entries, protocols=pdicts, seed=int(seed),
        shard_size=shard_size, status=Experiment.Status.SCHEDULED, scheduled_for=start_at,
        after_current=bool(after_current), num_images=len(data), units_total=len(data) * len(entries),
        estimated_seconds=estimate, estimate_basis=basis,
    )
    if submit:
        experiment = experiment_submit(experiment=experiment)
    return experiment


def experiment_submit(*, experiment: Experiment) -> Experiment:
    """Start now, or leave the run scheduled: a start time is handed to Celery as the task's
    ``eta``; "after the current runs" is released when the owner's runs finish."""
    if experiment.scheduled_for is not None and experiment.scheduled_for > timezone.now():
        from .tasks import start_scheduled

        pk, eta = experiment.pk, experiment.scheduled_for
        transaction.on_commit(lambda: start_scheduled.apply_async((pk,), eta=eta))
        return experiment
    if experiment.after_current:
        experiments_release(owner=experiment.owner)
        experiment.refresh_from_db()
        return experiment
    return experiment_start(experiment=experiment)


def _make_shards(experiment: Experiment) -> list[Shard]:
    size = experiment.shard_size
    return Shard.objects.bulk_create([
        Shard(experiment=experiment, index=i, start=start, stop=min(start + size, experiment.num_images))
        for i, start in enumerate(range(0, experiment.num_images, size))
    ])


def _enqueue_shards(shard_ids: Iterable[int]) -> None:
    from .tasks import run_shard

    ids = list(shard_ids)
    transaction.on_commit(lambda: [run_shard.delay(pk) for pk in ids])


@transaction.atomic
def experiment_start(*, experiment: Experiment) -> Experiment:
    """Split a scheduled run into shards and queue them (once: a second call changes nothing)."""
    exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if exp.status != Experiment.Status.SCHEDULED:
        return exp
    shards = list(exp.shards.all()) or _make_shards(exp)
    exp.status = Experiment.Status.QUEUED
    exp.save(update_fields=["status"])
    _enqueue_shards(s.pk for s in shards if s.status == Shard.Status.QUEUED)
    return exp


def experiments_release(*, owner) -> list[Experiment]:
    """Start the owner's scheduled runs whose time has come, and, when none of their runs is
    queued or running, the oldest run waiting for "after the current ones"."""
    now = timezone.now()
    started = []
    due = Experiment.objects.filter(owner=owner, status=Experiment.Status.SCHEDULED, after_current=False,
                                    scheduled_for__lte=now)
    for exp in due:
        started.append(experiment_start(experiment=exp))
    if not Experiment.objects.owned_by(owner).active().exists():
        waiting = (Experiment.objects.filter(owner=owner, status=Experiment.Status.SCHEDULED, after_current=True)
                   .filter(Q(scheduled_for__isnull=True) | Q(scheduled_for__lte=now))
                   .order_by("created_at", "id").first())
        if waiting is not None:
            started.append(experiment_start(experiment=waiting))
    return started


def experiment_cancel(*, experiment: Experiment) -> Experiment:
    """Stop a run: queued shards are dropped, running ones stop after their current image;
    the records so far are kept and aggregated."""
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if exp.is_finished:
            raise StateError(f"run #{exp.pk} has already {exp.get_status_display().lower()}; nothing to cancel")
        exp.shards.exclude(status=Shard.Status.DONE).update(status=Shard.Status.CANCELLED)
        exp.status = Experiment.Status.CANCELLED
        exp.finished_at = timezone.now()
        exp.results = experiment_aggregate(experiment=exp)
        exp.manifest = _run_manifest(exp)
        exp.save(update_fields=["status", "finished_at", "results", "manifest"])
    experiments_release(owner=exp.owner)
    return exp


@transaction.atomic
def experiment_resume(*, experiment: Experiment) -> Experiment:
    """Queue every unfinished shard again (after a lost broker, or a worker that never came
    back). Safe at any time: a shard skips its finished images, a duplicate writes nothing."""
    exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if exp.status not in (Experiment.Status.QUEUED, Experiment.Status.RUNNING):
        raise StateError(f"run #{exp.pk} is {exp.get_status_display().lower()}; only queued or running runs resume")
    _enqueue_shards(exp.shards.filter(status__in=[Shard.Status.QUEUED, Shard.Status.RUNNING])
                    .values_list("pk", flat=True))
    return exp


def shards_requeue_for_worker(*, hostname: str, held_before: datetime) -> int:
    """Requeue the running shards a worker called ``hostname`` held before it restarted.

    Called when a worker starts: every shard still marked as running there with a heartbeat
    older than the start (``held_before``) was orphaned by its previous process (a crash or
    a killed site).
    """
    ids = list(Shard.objects.filter(worker=hostname, status=Shard.Status.RUNNING, heartbeat_at__lt=held_before,
                                    experiment__status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING])
               .values_list("pk", flat=True))
    if ids:
        logger.info("worker %s restarted: requeueing shards %s", hostname, ids)
        with transaction.atomic():
            _enqueue_shards(ids)
    return len(ids)


def experiment_delete(*, experiment: Experiment) -> None:
    if not experiment.is_finished and experiment.status != Experiment.Status.SCHEDULED:
        experiment_cancel(experiment=experiment)
    experiment.delete()


# ---------------------------------------------------------------------------------------------
# Evaluating one (image, method) unit


def _thumb(saliency) -> bytes:
    """The map as ``Record.THUMB²`` uint8, min–max scaled (what the drill-down draws)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(saliency), dtype=torch.float32)[None, None]
    small = F.interpolate(t, size=(Record.THUMB, Record.THUMB), mode="bilinear", align_corners=False,
                          antialias=t.shape[-1] > Record.THUMB)[0, 0]
    low, high = float(small.min()), float(small.max())
    scaled = (small - low) / (high - low) if high > low else torch.zeros_like(small)
    return (scaled * 255).round().clamp(0, 255).to(torch.uint8).numpy().tobytes()


def _error_text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


class _Evaluator:
    """Computes the records of one (image, method) unit for every protocol of a run.

    Maps are computed once per (input geometry, class) and shared by the protocols that need
    the same one (thesis-v1 and rise-v1 both use a 224×224 resize of the predicted class).
    """

    def __init__(self, *, classifier, experiment: Experiment):
        self.classifier = classifier
        self.experiment = experiment
        self.protocols = [protocol_from_dict(p) for p in experiment.protocols]
        self.manifests: dict[int, dict] = {}

    # -- maps ---------------------------------------------------------------------------------
    def _inputs(self, image, prep: Preprocessing):
        from .core.imageops import preprocess_pixels

        pixels = preprocess_pixels(image, prep)
        x = self.classifier.normalize(pixels[None]).to(self.classifier.device)
        return pixels, x

    def _maps(self, cache: dict, image, prep: Preprocessing, method: Mapping[str, Any], targets: list[int | None],
              image_index: int) -> list[tuple[Any, int]]:
        """``(S×S map tensor, explained class)`` per requested target (``None`` = top-1)."""
        import torch
        from explain.core.engine import explain

        if prep not in cache:
            inputs = self._inputs(image, prep)
            # Two geometries that give the same input (a square image under "square" and
            # "keep-aspect") share their maps.
            same = [e for e in cache.values()
                    if e["inputs"][0].shape == inputs[0].shape and torch.equal(e["inputs"][0], inputs[0])]
            cache[prep] = same[0] if same else {"inputs": inputs, "maps": {}, "top1": None}
        entry = cache[prep]
        pixels, x = entry["inputs"]
        wanted = [t if t is not None else entry["top1"] for t in targets]
        missing = [t for t in dict.fromkeys(wanted) if t is None or t not in entry["maps"]]
        if missing:
            if method.get("baseline"):
                if entry["top1"] is None:
                    with torch.no_grad():
                        entry["top1"] = int(self.classifier.module(x).argmax(dim=1)[0])
                seed = self.experiment.seed * 1_000_003 + image_index
                base = torch.from_numpy(baseline_map(method["key"], *pixels.shape[-2:], seed=seed))
                for t in missing:
                    entry["maps"][entry["top1"] if t is None else t] = base
            else:
                enhance = (method.get("enhance_params") or True) if method.get("enhance") else None
                explicit = [t for t in missing if t is not None]
                calls = ([None] if None in missing else []) + ([explicit] if explicit else [])
                for call in calls:
                    batch = x if call is None else x.repeat(len(call), 1, 1, 1)
                    results = explain(self.classifier, batch, method["key"], targets=call, params=method["params"],
                                      enhance=enhance, seed=self.experiment.seed)
                    for r in results:
                        entry["maps"][r.target] = r.saliency
                    if call is None:
                        entry["top1"] = results[0].target
                    self.manifests.setdefault(method["slot"], {
                        k: results[0].manifest.get(k)
                        for k in ("method", "params", "enhance", "layer", "versions", "device", "seed")
                    })
            wanted = [t if t is not None else entry["top1"] for t in targets]
        if entry["top1"] is None and None in targets:
            raise RuntimeError("the top-1 class was not computed")
        return [(entry["maps"][t], t) for t in wanted]

    def _explainer(self, method: Mapping[str, Any], image_index: int):
        """``(module, batch, targets) → B×S×S`` maps for the sanity checks (a randomised copy)."""
        import torch
        from explain.core.engine import explain

        def run(module, batch, targets):
            if method.get("baseline"):
                seed = self.experiment.seed * 1_000_003 + image_index
                one = torch.from_numpy(baseline_map(method["key"], *batch.shape[-2:], seed=seed))
                return torch.stack([one] * batch.shape[0])
            classifier = dataclasses.replace(self.classifier, module=module)
            enhance = (method.get("enhance_params") or True) if method.get("enhance") else None
            results = explain(classifier, batch, method["key"], targets=targets, params=method["params"],
                              enhance=enhance, seed=self.experiment.seed)
            return torch.stack([r.saliency for r in results])

        return run

    # -- one unit -----------------------------------------------------------------------------
    def unit(self, *, index: int, sample, image, method: Mapping[str, Any]) -> list[dict]:
        """Record fields for every protocol; a failure becomes a failed record, never an exception."""
        rows: list[dict] = []
        cache: dict = {}
        for protocol in self.protocols:
            started = time.perf_counter()
            try:
                if isinstance(image, BaseException):
                    raise image
                produced = self._protocol_rows(protocol, index, sample, image, method, cache)
            except Exception as error:  # noqa: BLE001 - one image's failure is recorded, the run goes on
                logger.warning("run %s image %s (%s) %s %s failed: %s", self.experiment.pk, index, sample.key,
                               method["key"], protocol.name, error, exc_info=not isinstance(error, ValueError))
                produced = [{"class_id": -1, "variant": "", "ok": False, "data": {}, "error": _error_text(error),
                             "thumb": None}]
            seconds = (time.perf_counter() - started) / len(produced)
            for row in produced:
                rows.append({"protocol": protocol.name, "seconds": seconds, **row})
        return rows

    def _label(self, sample) -> int:
        label = sample.label
        if label is None:
            raise ValueError(f"image {sample.key} has no ground-truth label")
        if not 0 <= label < self.classifier.num_classes:
            raise ValueError(f"label {label} of image {sample.key} is outside the model's {self.classifier.num_classes} classes")
        return label

    def _protocol_rows(self, protocol: Protocol, index: int, sample, image, method, cache) -> list[dict]:
        from .core import metrics
        from .core.imageops import preprocess_mask

        clf = self.classifier
        if isinstance(protocol, InsertionDeletionProtocol):
            target = self._label(sample) if protocol.explain == "target" else None
            [(sal, cls)] = self._maps(cache, image, protocol.preprocessing, method, [target], index)
            pixels, _ = cache[protocol.preprocessing]["inputs"]
            rec = metrics.causal_record(clf.module, pixels, sal, cls, protocol=protocol, mean=clf.mean, std=clf.std)
            return [{"class_id": cls, "variant": "", "ok": True, "data": rec.to_dict(), "error": "", "thumb": _thumb(sal)}]
        if isinstance(protocol, PerturbationProtocol):
            label = self._label(sample)
            out = []
            for mode in protocol.explain:
                [(sal, cls)] = self._maps(cache, image, protocol.preprocessing, method,
                                          [label if mode == "target" else None], index)
                pixels, _ = cache[protocol.preprocessing]["inputs"]
                rec = metrics.perturbation_record(clf.module, pixels, sal, label=label, explained=cls, mode=mode,
                                                  protocol=protocol, mean=clf.mean, std=clf.std)
                out.append({"class_id": cls, "variant": mode, "ok": True, "data": rec.to_dict(), "error": "",
                            "thumb": _thumb(sal)})
            return out
        if isinstance(protocol, PointingProtocol):
            pairs = list(metrics.pointing_pairs(sample, protocol))
            if not pairs:
                raise ValueError(f"image {sample.key} has no (non-difficult) object to point at")
            for class_id, _, _ in pairs:
                if not 0 <= class_id < clf.num_classes:
                    raise ValueError(f"class {class_id} of image {sample.key} is outside the model's {clf.num_classes} classes")
            # The protocol's geometry (TorchRay: shorter side 224, nothing cropped) keeps the whole
            # image in the map, which pointing_record resizes back to the original size.
            maps = self._maps(cache, image, protocol.preprocessing, method, [c for c, _, _ in pairs], index)
            out = []
            for (class_id, mask, difficult), (sal, _) in zip(pairs, maps):
                rec = metrics.pointing_record(sal, mask, class_id=class_id, protocol=protocol, difficult=difficult)
                out.append({"class_id": class_id, "variant": "", "ok": True, "data": rec.to_dict(), "error": "",
                            "thumb": _thumb(sal)})
            return out
        if isinstance(protocol, SegmentationProtocol):
            target = self._label(sample) if protocol.explain == "target" else None
            [(sal, cls)] = self._maps(cache, image, protocol.preprocessing, method, [target], index)
            mask = preprocess_mask(sample.foreground_mask(), protocol.preprocessing)
            rec = metrics.segmentation_record(sal, mask)
            return [{"class_id": cls, "variant": "", "ok": True, "data": rec.to_dict(), "error": "", "thumb": _thumb(sal)}]
        if isinstance(protocol, SanityProtocol):
            import torch

            target = self._label(sample) if protocol.explain == "target" else None
            [(sal, cls)] = self._maps(cache, image, protocol.preprocessing, method, [target], index)
            _, x = cache[protocol.preprocessing]["inputs"]
            _, recs, _ = metrics.sanity_records(clf.module, x, torch.tensor([cls]), self._explainer(method, index),
                                                protocol=protocol, seed=self.experiment.seed)
            return [{"class_id": cls, "variant": "", "ok": True, "data": {"steps": [r.to_dict() for r in recs]},
                     "error": "", "thumb": _thumb(sal)}]
        raise ValueError(f"no runner for protocol {protocol.name} ({protocol.metric})")


# ---------------------------------------------------------------------------------------------
# Running a shard


def _store(experiment: Experiment, index: int, sample_key: str, method: Mapping[str, Any], rows: list[dict]) -> None:
    """One unit's records in one transaction; a duplicate (re-executed shard) inserts nothing."""
    records = [
        Record(experiment=experiment, image_index=index, image_key=sample_key[:300], method_slot=method["slot"],
               method_key=method["key"], enhance=bool(method.get("enhance")), **row)
        for row in rows
    ]
    with transaction.atomic():
        Record.objects.bulk_create(records, ignore_conflicts=True)


def _cancelled(experiment_id: int) -> bool:
    return not Experiment.objects.filter(
        pk=experiment_id, status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING]).exists()


def _take(shard_id: int, worker: str) -> Shard | None:
    """Mark the shard as running here; ``None`` when there is nothing to do."""
    with transaction.atomic():
        shard = Shard.objects.select_for_update().select_related("experiment").filter(pk=shard_id).first()
        if shard is None or shard.status in (Shard.Status.DONE, Shard.Status.CANCELLED):
            return None
        exp = shard.experiment
        if exp.status not in (Experiment.Status.QUEUED, Experiment.Status.RUNNING):
            return None
        now = timezone.now()
        shard.status = Shard.Status.RUNNING
        shard.attempts += 1
        shard.worker = worker[:200]
        shard.heartbeat_at = now
        shard.started_at = shard.started_at or now
        shard.save(update_fields=["status", "attempts", "worker", "heartbeat_at", "started_at"])
        if exp.status == Experiment.Status.QUEUED:
            Experiment.objects.filter(pk=exp.pk, status=Experiment.Status.QUEUED).update(
                status=Experiment.Status.RUNNING, started_at=now)
            exp.status, exp.started_at = Experiment.Status.RUNNING, now
        return shard


def shard_run(*, shard: Shard, worker: str = "") -> Shard:
    """Evaluate the shard's images (every method, every protocol), skipping finished units.

    Idempotent: run it again after a crash, or twice at once, and the records come out the
    same. Per-image failures are records; a failure to load the model or the data set fails
    the run with the message.
    """
    taken = _take(shard.pk, worker)
    if taken is None:
        return Shard.objects.get(pk=shard.pk) if Shard.objects.filter(pk=shard.pk).exists() else shard
    shard = taken
    exp = shard.experiment
    try:
        if exp.model is None:
            raise NotAvailable("the run's model has been deleted")
        classifier = explain_services.classifier_load(model=exp.model)
        dataset = dataset_open(spec=exp.dataset)
        keys = exp.dataset_info.get("keys", [])
        if len(dataset) != exp.num_images or [s.key for s in dataset.samples[shard.start:shard.stop]] != keys[shard.start:shard.stop]:
            raise ValueError("the data set on disk no longer matches the one this run was submitted with "
                             "(images added, removed or renamed); submit a new run")
    except ValueError as error:
        logger.info("run %s failed: %s", exp.pk, error)
        _fail(exp, str(error))
        return shard
    except Exception as error:  # noqa: BLE001 - the run must not stay "running" for ever
        logger.exception("run %s could not start shard %s", exp.pk, shard.index)
        _fail(exp, f"internal error: {type(error).__name__}: {error}")
        return shard

    evaluator = _Evaluator(classifier=classifier, experiment=exp)
    methods = exp.methods
    done = set(Record.objects.filter(experiment=exp, image_index__gte=shard.start, image_index__lt=shard.stop)
               .values_list("image_index", "method_slot").distinct())
    units_done = len(done)
    last_save = time.monotonic()
    for index in range(shard.start, shard.stop):
        pending = [m for m in methods if (index, m["slot"]) not in done]
        if not pending:
            continue
        if _cancelled(exp.pk):
            logger.info("run %s was cancelled; shard %s stops at image %s", exp.pk, shard.index, index)
            return shard
        sample = dataset[index]
        try:
            image = sample.load_image()
        except Exception as error:  # noqa: BLE001 - a broken image is one failed record per method
            image = error
        for method in pending:
            started = time.perf_counter()
            rows = evaluator.unit(index=index, sample=sample, image=image, method=method)
            _store(exp, index, sample.key, method, rows)
            units_done += 1
            shard.units_computed += 1
            shard.busy_seconds += time.perf_counter() - started
            if time.monotonic() - last_save >= PROGRESS_EVERY_SECONDS:
                last_save = time.monotonic()
                Shard.objects.filter(pk=shard.pk).update(
                    units_done=units_done, units_computed=shard.units_computed, busy_seconds=shard.busy_seconds,
                    heartbeat_at=timezone.now())
    shard.units_done = units_done
    shard.status = Shard.Status.DONE
    shard.finished_at = timezone.now()
    shard.heartbeat_at = shard.finished_at
    shard.manifest = {"device": str(classifier.device), "worker": worker,
                      "methods": {str(k): v for k, v in evaluator.manifests.items()}}
    Shard.objects.filter(pk=shard.pk).exclude(status=Shard.Status.CANCELLED).update(
        status=shard.status, units_done=shard.units_done, units_computed=shard.units_computed,
        busy_seconds=shard.busy_seconds, finished_at=shard.finished_at, heartbeat_at=shard.heartbeat_at,
        manifest=shard.manifest)
    experiment_complete_if_done(experiment=exp)
    return shard


def _fail(experiment: Experiment, message: str) -> None:
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if exp.is_finished:
            return
        exp.shards.exclude(status=Shard.Status.DONE).update(status=Shard.Status.CANCELLED)
        exp.mark_failed(message)
    experiments_release(owner=experiment.owner)


def experiment_complete_if_done(*, experiment: Experiment) -> Experiment:
    """Aggregate and close the run once every shard is done (exactly once, under a row lock)."""
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if exp.status not in (Experiment.Status.QUEUED, Experiment.Status.RUNNING):
            return exp
        if exp.shards.exclude(status=Shard.Status.DONE).exists():
            return exp
        exp.results = experiment_aggregate(experiment=exp)
        exp.manifest = _run_manifest(exp)
        exp.status = Experiment.Status.DONE
        exp.finished_at = timezone.now()
        exp.started_at = exp.started_at or exp.finished_at
        exp.save(update_fields=["results", "manifest", "status", "finished_at", "started_at"])
    experiments_release(owner=exp.owner)
    return exp


def experiment_run_sync(*, experiment: Experiment, worker: str = "command line") -> Experiment:
    """Run a run's shards one after the other in this process (the command line's debugging path)."""
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if exp.status == Experiment.Status.SCHEDULED:
            if not exp.shards.exists():
                _make_shards(exp)
            exp.status = Experiment.Status.QUEUED
            exp.save(update_fields=["status"])
    for shard in Shard.objects.filter(experiment=experiment).order_by("index"):
        shard_run(shard=shard, worker=worker)
    experiment.refresh_from_db()
    return experiment


def _run_manifest(exp: Experiment) -> dict:
    """What the workers used: devices, library versions, resolved parameters per method."""
    from explain.core.engine import library_versions

    devices, methods = set(), {}
    for manifest in exp.shards.exclude(manifest={}).values_list("manifest", flat=True):
        devices.add(manifest.get("device", ""))
        for slot, entry in (manifest.get("methods") or {}).items():
            methods.setdefault(slot, entry)
    return {"devices": sorted(d for d in devices if d), "methods": methods, "versions": library_versions(),
            "aggregated_at": timezone.now().isoformat()}


# ---------------------------------------------------------------------------------------------
# Aggregation: the table per protocol, the curves the plots draw


def _columns(protocol: Protocol) -> list[dict]:
    """The table's columns for a protocol: key, label and which direction is better."""
    if isinstance(protocol, InsertionDeletionProtocol):
        return [{"key": "insertion", "label": "Insertion AUC", "better": "higher"},
                {"key": "deletion", "label": "Deletion AUC", "better": "lower"},
                {"key": "overall", "label": "Overall", "better": "higher"}]
    if isinstance(protocol, PerturbationProtocol):
        cols = []
        for mode in protocol.explain:
            cols += [{"key": f"{mode}.positive", "label": f"Positive AUC ({mode})", "better": "lower"},
                     {"key": f"{mode}.negative", "label": f"Negative AUC ({mode})", "better": "higher"},
                     {"key": f"{mode}.overall", "label": f"Overall ({mode})", "better": "higher"}]
        return cols
    if isinstance(protocol, PointingProtocol):
        return [{"key": "all", "label": "Pointing (all)", "better": "higher"},
                {"key": "difficult", "label": "Pointing (difficult)", "better": "higher"}]
    if isinstance(protocol, SegmentationProtocol):
        return [{"key": "pixel_accuracy", "label": "Pixel accuracy", "better": "higher"},
                {"key": "miou", "label": "mIoU", "better": "higher"},
                {"key": "map", "label": "mAP", "better": "higher"},
                {"key": "iou_foreground", "label": "IoU foreground", "better": "higher"},
                {"key": "iou_background", "label": "IoU background", "better": "higher"}]
    if isinstance(protocol, SanityProtocol):
        cols = []
        for mode in protocol.modes:
            cols += [{"key": f"{mode}.spearman_abs", "label": f"Spearman |map| ({mode})", "better": "lower"},
                     {"key": f"{mode}.ssim", "label": f"SSIM ({mode})", "better": "lower"},
                     {"key": f"{mode}.hog", "label": f"HOG ({mode})", "better": "lower"}]
        return cols
    return []


def _summarise(protocol: Protocol, records: list[dict], class_names) -> tuple[dict, dict]:
    """``(metrics for the table, extras for the plots)`` of one method's records."""
    from .core import metrics

    if isinstance(protocol, InsertionDeletionProtocol):
        agg = metrics.aggregate_causal(records, protocol)
        return ({k: agg[k] for k in ("insertion", "deletion", "overall")},
                {"insertion_curve": agg["insertion_curve"], "deletion_curve": agg["deletion_curve"],
                 "groups": agg["groups"]})
    if isinstance(protocol, PerturbationProtocol):
        agg = metrics.aggregate_perturbation(records, protocol)
        values = {f"{mode}.{k}": agg.get(mode, {}).get(k) for mode in protocol.explain
                  for k in ("positive", "negative", "overall")}
        return values, {"modes": agg}
    if isinstance(protocol, PointingProtocol):
        agg = metrics.aggregate_pointing(records, class_names)
        return ({"all": agg["all"]["score"], "difficult": agg["difficult"]["score"]},
                {"n_all": agg["all"]["n"], "n_difficult": agg["difficult"]["n"], "per_class": agg["all"]["per_class"]})
    if isinstance(protocol, SegmentationProtocol):
        agg = metrics.aggregate_segmentation(records)
        return {k: agg[k] for k in ("pixel_accuracy", "miou", "map", "iou_foreground", "iou_background")}, {}
    if isinstance(protocol, SanityProtocol):
        steps = [step for r in records for step in r.get("steps", [])]
        agg = metrics.aggregate_sanity(steps)
        values = {}
        for mode in protocol.modes:
            rows = agg.get(mode, [])
            for key in ("spearman_abs", "ssim", "hog"):
                means = [row[key]["mean"] for row in rows if row[key]["mean"] is not None]
                values[f"{mode}.{key}"] = float(np.mean(means)) if means else None
        return values, {"steps": agg}
    return {}, {}


def experiment_aggregate(*, experiment: Experiment) -> dict:
    """The aggregate table of every protocol (methods × metrics), best per column marked,
    plus the curves and groups the plots draw. Recomputable from the records at any time."""
    class_names = None
    if experiment.model is not None and experiment.model.class_names:
        class_names = experiment.model.class_names
    out = {"protocols": []}
    for pdata in experiment.protocols:
        protocol = protocol_from_dict(pdata)
        columns = _columns(protocol)
        rows = []
        for method in experiment.methods:
            qs = Record.objects.filter(experiment=experiment, method_slot=method["slot"], protocol=protocol.name)
            good = [data for data in qs.filter(ok=True).values_list("data", flat=True).iterator()]
            failed = qs.filter(ok=False).count()
            values, extras = _summarise(protocol, good, class_names) if good else ({c["key"]: None for c in columns}, {})
            rows.append({"slot": method["slot"], "method": method["key"], "label": experiment.method_label(method["slot"]),
                         "enhance": bool(method.get("enhance")), "baseline": bool(method.get("baseline")),
                         "n": len(good), "failed": failed, "values": values, "extras": extras})
        best = {}
        for col in columns:
            vals = [r["values"].get(col["key"]) for r in rows]
            vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
            if vals:
                best[col["key"]] = max(vals) if col["better"] == "higher" else min(vals)
        out["protocols"].append({"name": protocol.name, "metric": protocol.metric, "description": protocol.description,
                                 "params": protocol.params(), "columns": columns, "rows": rows, "best": best})
    return out
