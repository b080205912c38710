"""Data sets a run reads: the formats the site knows, a request normalised, the set opened (cached per process).

The generated localisation set is built on a worker, never inside a web request:
:func:`dataset_needs_build` tells the run's creation to leave the run "preparing" and queue
the build; :func:`dataset_expected` gives its size and classes without building it.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from django.conf import settings

from saliency_site.errors import InputError

from ..core import datasets as ds

#: Images per run at most (a whole ILSVRC val set is 50 000).
MAX_IMAGES = 100_000
#: The options each kind takes.
DATASET_OPTIONS = {"sample-localisation": ("seed", "num_images"), "voc2007": ("image_set",)}


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


def _sample_cache_limits() -> dict[str, int]:
    """How many localisation sets, and how many bytes of them, stay on disk (least recently used evicted)."""
    return {"cache_sets": int(getattr(settings, "SAMPLE_CACHE_SETS", ds.sample.CACHE_SETS)),
            "cache_bytes": int(getattr(settings, "SAMPLE_CACHE_MB", ds.sample.CACHE_BYTES // 2**20)) * 2**20}


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be a whole number")
    return value


def _options(kind: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InputError("dataset.options must be an object such as {\"seed\": 0}")
    allowed = DATASET_OPTIONS.get(kind, ())
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        takes = f"takes the option(s) {list(allowed)}" if allowed else "takes no options"
        raise InputError(f"{kind} {takes}, not {unknown}")
    options: dict[str, Any] = {}
    if kind == "sample-localisation":
        seed = _whole(raw.get("seed", 0), "dataset.options.seed")
        num_images = _whole(raw.get("num_images", 12), "dataset.options.num_images")
        try:
            options["seed"], options["num_images"] = ds.sample_check_options(seed=seed, num_images=num_images)
        except ValueError as error:
            raise InputError(f"dataset.options.{error}") from None
    if kind == "voc2007":
        try:
            options["image_set"] = ds.check_name(raw.get("image_set", "test"), what="dataset.options.image_set")
        except ValueError as error:
            raise InputError(str(error)) from None
    return options


def dataset_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A normalised, JSON-able data-set request: ``{kind, paths, options, subset}``."""
    if not isinstance(raw, Mapping):
        raise InputError("dataset must be an object such as {\"kind\": \"sample-localisation\"}")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in DATASET_KINDS:
        raise InputError(f"unknown data set kind {kind!r}; choose one of {sorted(DATASET_KINDS)}")
    spec = DATASET_KINDS[kind]
    given = raw.get("paths") or {}
    if not isinstance(given, Mapping) or not all(isinstance(v, str) for v in given.values()):
        raise InputError("dataset.paths must be an object of path fields, such as {\"root\": \"/data/VOCdevkit\"}")
    given = dict(given)
    unknown = sorted(set(given) - set(spec.paths) - set(spec.optional_paths))
    if unknown:
        raise InputError(f"{kind} takes the path field(s) {list(spec.paths + spec.optional_paths)}, not {unknown}")
    missing = [p for p in spec.paths if not given.get(p)]
    if missing:
        raise InputError(f"{kind} needs the path field(s) {missing} (folders or files under the data roots)")
    paths = {k: str(v) for k, v in given.items() if v}
    options = _options(kind, raw.get("options"))
    requested = raw.get("subset") or {}
    if not isinstance(requested, Mapping):
        raise InputError("dataset.subset must be an object such as {\"mode\": \"first\", \"n\": 100}")
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
            subset["seed"] = _whole(requested.get("seed", 0), "dataset.subset.seed")
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
                                 num_images=options.get("num_images", 12), **_sample_cache_limits())
    if kind == "ilsvrc2012-val":
        return ds.read_ilsvrc2012_val(paths["images"], allowed_roots=roots, devkit=paths.get("devkit"),
                                      solution_csv=paths.get("solution_csv"), synsets=paths.get("synsets"))
    if kind == "voc2007":
        return ds.read_voc2007(paths["root"], allowed_roots=roots, image_set=options.get("image_set", "test"))
    if kind == "coco2014-val":
        return ds.read_coco2014_val(paths["images"], paths["annotations"], allowed_roots=roots)
    return ds.read_imagenet_segmentation(paths["path"], allowed_roots=roots)


def _subset_size(subset: Mapping[str, Any], available: int, name: str) -> int:
    if subset["mode"] == "all":
        return available
    if subset["n"] > available:
        raise InputError(f"{name} has {available} images; cannot take {subset['n']}")
    return subset["n"]


def dataset_needs_build(spec: Mapping[str, Any]) -> bool:
    """Whether opening ``spec`` would generate images (a localisation set not in the cache):
    work for a worker, not for a web request."""
    if spec["kind"] != "sample-localisation":
        return False
    options = spec.get("options", {})
    return not ds.sample_is_cached("localisation", cache_dir=_sample_cache_dir(), seed=options.get("seed", 0),
                                   num_images=options.get("num_images", 12))


def dataset_expected(spec: Mapping[str, Any]) -> ds.Dataset:
    """A generated set as it will be once built, without its samples: its name, its classes
    (ImageNet's 1000) and, in ``extra["num_images"]``, how many images the run will have."""
    from explain.core.zoo import imagenet_class_names

    if spec["kind"] != "sample-localisation":
        raise ValueError(f"{spec['kind']} is read from disk, not generated")
    available = spec.get("options", {}).get("num_images", 12)
    count = _subset_size(spec["subset"], available, "sample-localisation")
    return ds.Dataset(name="sample-localisation", version=ds.SAMPLE_VERSION, root=str(_sample_cache_dir()),
                      class_names=imagenet_class_names(), samples=(), extra={"num_images": count})


@functools.lru_cache(maxsize=4)
def _dataset_cached(spec_json: str, roots_json: str) -> ds.Dataset:
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
    # The data roots are part of the key: a set listed under other roots is listed again.
    return _dataset_cached(json.dumps(spec, sort_keys=True), json.dumps([str(r) for r in settings.DATA_ROOTS]))
