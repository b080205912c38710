"""Evaluating one (image, method) unit: its maps, computed once and shared, and a record per protocol."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from explain.core.engine import explain

from ..core import metrics
from ..core.imageops import preprocess_mask, preprocess_pixels
from ..core.protocols import (
    InsertionDeletionProtocol,
    PerturbationProtocol,
    PointingProtocol,
    Preprocessing,
    Protocol,
    SanityProtocol,
    SegmentationProtocol,
    protocol_from_dict,
)
from ..models import Experiment, Record
from .methods import baseline_map

logger = logging.getLogger(__name__)


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


class Evaluator:
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
            target = self._label(sample) if protocol.explain == "target" else None
            [(sal, cls)] = self._maps(cache, image, protocol.preprocessing, method, [target], index)
            _, x = cache[protocol.preprocessing]["inputs"]
            _, recs, _ = metrics.sanity_records(clf.module, x, torch.tensor([cls]), self._explainer(method, index),
                                                protocol=protocol, seed=self.experiment.seed)
            return [{"class_id": cls, "variant": "", "ok": True, "data": {"steps": [r.to_dict() for r in recs]},
                     "error": "", "thumb": _thumb(sal)}]
        raise ValueError(f"no runner for protocol {protocol.name} ({protocol.metric})")
