"""Data sets a run reads: the formats the site knows, a request normalised, the set opened (cached per process)."""
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


def dataset_spec(raw: Mapping[str, Any]) -> dict[str, Any]:
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
