"""Evaluating one (image, method) unit: its maps, computed once and shared, and a record per protocol."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from explain.core.engine import explain

from ..core import metrics
from ..core.imageops import preprocess_pixels
from ..core.protocols import Preprocessing, protocol_from_dict
from ..models import Experiment, Record
from .methods import baseline_map

logger = logging.getLogger(__name__)

#: Most images of a shard evaluated together: bounds the maps and perturbed inputs held at once,
#: and how long a shard runs before it may yield to interactive work.
MAX_IMAGE_GROUP = metrics.MAX_IMAGE_GROUP


def _thumb(saliency) -> bytes:
    """The map as ``Record.THUMB²`` uint8, min–max scaled (what the drill-down draws)."""
    t = torch.as_tensor(np.asarray(saliency), dtype=torch.float32)[None, None]
    small = F.interpolate(t, size=(Record.THUMB, Record.THUMB), mode="bilinear", align_corners=False,
                          antialias=t.shape[-1] > Record.THUMB)[0, 0]
    low, high = float(small.min()), float(small.max())
    scaled = (small - low) / (high - low) if high > low else torch.zeros_like(small)
    return (scaled * 255).round().clamp(0, 255).to(torch.uint8).numpy().tobytes()


def _error_text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


_listeners = threading.local()


@contextlib.contextmanager
def units_observed(callback: Callable[[int, Mapping[str, Any]], None]) -> Iterator[None]:
    """Within the block, ``callback(image_index, method)`` after every unit this thread evaluates
    (the command line's progress bar)."""
    stack = getattr(_listeners, "stack", None)
    if stack is None:
        stack = _listeners.stack = []
    stack.append(callback)
    try:
        yield
    finally:
        stack.remove(callback)


class Evaluator:
    """Computes the records of (image, method) units for every protocol of a run, several images at once.

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
        pixels = preprocess_pixels(image, prep)
        x = self.classifier.normalize(pixels[None]).to(self.classifier.device)
        return pixels, x

    def _maps(self, cache: dict, image, prep: Preprocessing, method: Mapping[str, Any], targets: list[int | None],
              image_index: int) -> list[tuple[Any, int]]:
        """``(S×S map tensor, explained class)`` per requested target (``None`` = top-1)."""
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

    # -- units --------------------------------------------------------------------------------
    def image_group_size(self) -> int:
        """How many images of a shard are evaluated together (their model passes share batches;
        :func:`metrics.image_group_size`, at most :data:`MAX_IMAGE_GROUP`)."""
        return metrics.image_group_size(self.protocols, self.classifier.device, most=MAX_IMAGE_GROUP)

    def units(self, *, items: Sequence[tuple[int, Any, Any]], method: Mapping[str, Any]) -> list[list[dict]]:
        """Record fields for every protocol of each ``(index, sample, image)`` (``image`` may be the
        exception loading it raised), one list per item. The images' model passes share batches
        where the family allows (:meth:`MetricFamily.run_many`). A failure becomes that image's
        failed record, never an exception."""
        rows: list[list[dict]] = [[] for _ in items]
        caches: list[dict] = [{} for _ in items]
        for protocol in self.protocols:
            family = metrics.get_family(protocol.metric)
            started = time.perf_counter()
            good = [i for i, (_, _, image) in enumerate(items) if not isinstance(image, BaseException)]
            contexts = [self._context(items[i], method, caches[i]) for i in good]
            results: list[Any] = [items[i][2] for i in range(len(items))]
            for i, result in zip(good, family.run_many(protocol, contexts)):
                results[i] = result
            seconds = (time.perf_counter() - started) / len(items)
            for i, result in enumerate(results):
                index, sample, _ = items[i]
                if isinstance(result, BaseException):
                    logger.warning("run %s image %s (%s) %s %s failed: %s", self.experiment.pk, index, sample.key,
                                   method["key"], protocol.name, result,
                                   exc_info=None if isinstance(result, ValueError) else result)
                    produced = [{"class_id": -1, "variant": "", "ok": False, "data": {}, "error": _error_text(result),
                                 "thumb": None}]
                else:
                    produced = [{"class_id": row["class_id"], "variant": row["variant"], "ok": True, "data": row["data"],
                                 "error": "", "thumb": _thumb(row["saliency"])} for row in result]
                for row in produced:
                    rows[i].append({"protocol": protocol.name, "seconds": seconds / len(produced), **row})
        for index, _, _ in items:
            for callback in list(getattr(_listeners, "stack", ())):
                callback(index, method)
        return rows

    def _context(self, item, method, cache: dict) -> "_RunContext":
        index, sample, image = item
        return _RunContext(self, index=index, sample=sample, image=image, method=method, cache=cache)


class _RunContext(metrics.ImageContext):
    """One image of a run: the run's classifier, its map cache (baselines, enhancement) and seed."""

    def __init__(self, evaluator: Evaluator, *, index: int, sample, image, method, cache: dict):
        clf = evaluator.classifier
        super().__init__(model=clf.module, mean=clf.mean, std=clf.std, sample=sample, image=image,
                         num_classes=clf.num_classes, seed=evaluator.experiment.seed, index=index)
        self.evaluator, self.method, self.cache = evaluator, method, cache

    def inputs(self, prep: Preprocessing):
        if prep not in self.cache:
            self.evaluator._maps(self.cache, self.image, prep, self.method, [], self.index)
        return self.cache[prep]["inputs"]

    def maps(self, prep: Preprocessing, targets):
        return self.evaluator._maps(self.cache, self.image, prep, self.method, list(targets), self.index)

    def explainer(self):
        return self.evaluator._explainer(self.method, self.index)
