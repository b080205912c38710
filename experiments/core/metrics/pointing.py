"""The pointing game (Zhang et al., "Top-down neural attention by excitation backprop", IJCV 2018),
scored as in TorchRay's ``PointingGame``.

For every (image, ground-truth class present) pair the map for that class is resized to the
original image (bilinear), and

* ``score="max"`` (``torchray-pointing-v1``): the first maximum in raster order is a *hit* when
  some ground-truth pixel ``q`` of the class satisfies ``‖p − q‖₂ < tolerance`` (strictly;
  15 px), else a *miss*;
* ``score="top-k"`` (``thesis-pointing-top100-v1``): the score is the fraction of the ``k``
  highest-valued pixels (ties in raster order) that satisfy the same condition.

The ground truth is the union of the class's boxes (VOC, all boxes of the class including
"difficult" ones) or of its instance masks (COCO). A pair whose boxes are *all* flagged
difficult is skipped (TorchRay). Per-class accuracy = hits / (hits + misses) (or the mean
top-k fraction); the score is the mean over the classes that have at least one pair.

"Difficult" subset: TorchRay ships fixed lists from the EBP paper. We recompute the paper's
definition: the class's ground truth covers less than a quarter of the image and the image
contains at least one other class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..imageops import as_map
from ..protocols import PointingProtocol
from .base import Cost, MetricFamily
from .registry import register_metric

__all__ = ["PointingRecord", "distance_to_mask", "pointing_record", "pointing_pairs", "aggregate_pointing", "ebp_difficult"]


def distance_to_mask(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest ``True`` pixel of ``mask`` (0 inside)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the ground-truth mask is empty; a pointing pair needs at least one object pixel")
    return ndimage.distance_transform_edt(~mask)


def resize_map(saliency: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """``h×w`` → ``height×width`` (bilinear with ``align_corners=False``, or nearest)."""
    if tuple(saliency.shape) == (height, width):
        return saliency
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(saliency[None, None], size=(height, width), mode=mode, **kwargs)[0, 0]


@dataclass(frozen=True)
class PointingRecord:
    """One (image, method, class) pair: the score (1/0 for hit/miss, or a fraction) and the point."""

    class_id: int
    score: float
    point: tuple[int, int]        # (x, y) of the first maximum, in original pixels
    difficult: bool = False       # in the EBP "difficult" subset

    def to_dict(self) -> dict[str, Any]:
        return {"class_id": self.class_id, "score": self.score, "point": list(self.point), "difficult": self.difficult}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PointingRecord":
        x, y = data["point"]
        return cls(int(data["class_id"]), float(data["score"]), (int(x), int(y)), bool(data.get("difficult", False)))


def pointing_record(
    saliency: torch.Tensor | np.ndarray,
    mask: np.ndarray,
    *,
    class_id: int,
    protocol: PointingProtocol,
    difficult: bool = False,
) -> PointingRecord:
    """Score one map against the class's ground-truth region.

    Args:
        saliency: ``h×w`` map covering the whole image, e.g. computed on the protocol's
            ``keep-aspect`` input (a centre-cropped map must first be laid back onto the
            original, e.g. with ``explain.core.imaging.Geometry.to_original``).
        mask: ``H×W`` boolean ground truth at the original image size.
    """
    if not isinstance(protocol, PointingProtocol):
        raise TypeError(f"pointing_record needs a PointingProtocol, got {type(protocol).__name__}")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    height, width = mask.shape
    sal = resize_map(as_map(saliency), height, width, protocol.resize_mode).numpy().reshape(-1)
    near = distance_to_mask(mask).reshape(-1) < protocol.tolerance
    first_max = int(np.argmax(sal))  # numpy returns the first occurrence
    point = (first_max % width, first_max // width)
    if protocol.score == "max":
        score = 1.0 if near[first_max] else 0.0
    else:
        k = min(protocol.top_k, sal.size)
        top = np.argsort(-sal, kind="stable")[:k]
        score = float(near[top].mean())
    return PointingRecord(int(class_id), score, point, bool(difficult))


def ebp_difficult(class_mask: np.ndarray, classes_present: Iterable[int], class_id: int) -> bool:
    """The EBP "difficult" condition: ground truth < 1/4 of the image and another class present."""
    class_mask = np.asarray(class_mask, dtype=bool)
    others = set(classes_present) - {class_id}
    return bool(class_mask.sum() < class_mask.size / 4 and others)


def pointing_pairs(sample: Any, protocol: PointingProtocol) -> Iterator[tuple[int, np.ndarray, bool]]:
    """The ``(class_id, mask, difficult)`` pairs one :class:`~experiments.core.datasets.Sample` yields.

    Classes whose objects are all flagged difficult are skipped when the protocol says so.
    """
    present = sorted({o.label for o in sample.objects})
    for class_id in present:
        objects = [o for o in sample.objects if o.label == class_id]
        if protocol.skip_all_difficult and all(o.difficult for o in objects):
            continue
        mask = sample.class_mask(class_id)
        if not mask.any():
            continue
        yield class_id, mask, ebp_difficult(mask, present, class_id)


def aggregate_pointing(
    records: Iterable[PointingRecord | Mapping[str, Any]], class_names: Iterable[str] | None = None
) -> dict[str, Any]:
    """Mean per-class accuracy, for all pairs and for the "difficult" subset, ×100.

    ``{"all": {"score", "n", "per_class": {class: accuracy}}, "difficult": {…}}``; per-class
    accuracy is the mean record score of the class (hits / pairs for ``score="max"``), and the
    score is the mean over classes with at least one pair.
    """
    recs = [r if isinstance(r, PointingRecord) else PointingRecord.from_dict(r) for r in records]
    names = list(class_names) if class_names is not None else None

    def summary(subset: list[PointingRecord]) -> dict[str, Any]:
        by_class: dict[int, list[float]] = {}
        for r in subset:
            by_class.setdefault(r.class_id, []).append(r.score)
        per_class = {c: 100 * float(np.mean(v)) for c, v in sorted(by_class.items())}
        score = float(np.mean(list(per_class.values()))) if per_class else None
        label = (lambda c: names[c]) if names else str
        return {"score": score, "n": len(subset), "per_class": {label(c): v for c, v in per_class.items()}}

    return {"all": summary(recs), "difficult": summary([r for r in recs if r.difficult])}


@register_metric("pointing")
class PointingFamily(MetricFamily):
    """The pointing game (Zhang et al., IJCV 2018; TorchRay): :func:`pointing_record` per pair."""

    label = "Pointing game"
    protocol_class = PointingProtocol

    def needs(self, protocol):
        return {"objects"}

    def cost(self, protocol, *, model_layers=0):
        return Cost(explainer_runs=1.5)   # about one and a half classes per image on VOC/COCO

    def columns(self, protocol):
        return [{"key": "all", "label": "Pointing (all)", "better": "higher"},
                {"key": "difficult", "label": "Pointing (difficult)", "better": "higher"}]

    def run(self, protocol, ctx):
        sample = ctx.sample
        pairs = list(pointing_pairs(sample, protocol))
        if not pairs:
            raise ValueError(f"image {sample.key} has no (non-difficult) object to point at")
        for class_id, _, _ in pairs:
            ctx.check_class(class_id)
        # The protocol's geometry (TorchRay: shorter side 224, nothing cropped) keeps the whole
        # image in the map, which pointing_record resizes back to the original size.
        maps = ctx.maps(protocol.preprocessing, [c for c, _, _ in pairs])
        out = []
        for (class_id, mask, difficult), (sal, _) in zip(pairs, maps):
            rec = pointing_record(sal, mask, class_id=class_id, protocol=protocol, difficult=difficult)
            out.append({"class_id": class_id, "variant": "", "data": rec.to_dict(), "saliency": sal})
        return out

    def aggregate(self, protocol, records, *, class_names=None):
        return aggregate_pointing(list(records), class_names)

    def summarise(self, protocol, records, class_names=None):
        agg = aggregate_pointing(records, class_names)
        return ({"all": agg["all"]["score"], "difficult": agg["difficult"]["score"]},
                {"n_all": agg["all"]["n"], "n_difficult": agg["difficult"]["n"], "per_class": agg["all"]["per_class"]})

    def record_score(self, data):
        return 100 * data["score"]
