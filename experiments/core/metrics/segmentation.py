"""Weakly supervised segmentation on ImageNet-Segmentation (protocol of Chefer, Gur and Wolf, CVPR 2021).

Per image, with the ``S×S`` map ``m`` and the binary ground truth ``g``:

* ``m ← (m − min m) / (max m − min m)`` (a constant map becomes all zeros);
* predicted foreground ``f = m > mean(m)``;
* counts: correct pixels ``Σ[f = g]``, labelled pixels ``S²``, and for background (0) and
  foreground (1) the intersection ``|f_c ∩ g_c|`` and union ``|f_c ∪ g_c|``;
* AP of the soft scores ``[1 − m, m]`` against the one-hot mask ``[1 − g, g]``, both
  channels flattened together (NaN counts as 0).

Over the data set the counts are **pooled**: pixel accuracy = Σcorrect / Σlabelled,
IoU_c = Σintersection_c / Σunion_c, mIoU = mean of the two IoUs; mAP is the mean of the
per-image APs. Everything ×100.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..imageops import as_map, preprocess_mask
from ..protocols import SegmentationProtocol
from .base import MetricFamily
from .registry import register_metric

__all__ = ["SegmentationRecord", "average_precision", "segmentation_record", "aggregate_segmentation"]


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision ``Σ_k (R_k − R_{k−1}) P_k`` over the distinct score thresholds, high to low.

    Equal scores form one threshold (no interpolation), the definition scikit-learn's
    ``average_precision_score`` uses. NaN when there is no positive.
    """
    y = np.asarray(y_true, dtype=bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in size: {y.shape} vs {s.shape}")
    positives = y.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # The last index of each run of equal scores is one threshold.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    true_pos = np.cumsum(y)[last]
    precision = true_pos / (last + 1)
    recall = true_pos / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class SegmentationRecord:
    """Pixel counts and AP of one image (pooled by :func:`aggregate_segmentation`)."""

    correct: int
    labeled: int
    intersection: tuple[int, int]   # (background, foreground)
    union: tuple[int, int]
    ap: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["intersection"], data["union"] = list(self.intersection), list(self.union)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SegmentationRecord":
        return cls(
            int(data["correct"]),
            int(data["labeled"]),
            tuple(int(v) for v in data["intersection"]),
            tuple(int(v) for v in data["union"]),
            float(data["ap"]),
        )


def segmentation_record(saliency: torch.Tensor | np.ndarray, mask: np.ndarray) -> SegmentationRecord:
    """Counts and AP of one ``S×S`` map against the ``S×S`` boolean foreground mask."""
    sal = as_map(saliency).double().numpy()
    gt = np.asarray(mask, dtype=bool)
    if gt.shape != sal.shape:
        raise ValueError(f"mask is {gt.shape} but the map is {sal.shape}; resize both to the protocol size")
    low, high = sal.min(), sal.max()
    norm = (sal - low) / (high - low) if high > low else np.zeros_like(sal)
    fg = norm > norm.mean()
    correct = int((fg == gt).sum())
    inter = (int((~fg & ~gt).sum()), int((fg & gt).sum()))
    union = (int((~fg | ~gt).sum()), int((fg | gt).sum()))
    ap = average_precision(np.stack([~gt, gt]), np.stack([1 - norm, norm]))
    return SegmentationRecord(correct, int(gt.size), inter, union, 0.0 if np.isnan(ap) else ap)


def aggregate_segmentation(records: Iterable[SegmentationRecord | Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled pixel accuracy and IoUs, per-image mean AP, all ×100 (``None`` without records)."""
    recs = [r if isinstance(r, SegmentationRecord) else SegmentationRecord.from_dict(r) for r in records]
    if not recs:
        return {"n": 0, "pixel_accuracy": None, "iou_background": None, "iou_foreground": None, "miou": None, "map": None}
    correct = sum(r.correct for r in recs)
    labeled = sum(r.labeled for r in recs)
    inter = np.sum([r.intersection for r in recs], axis=0, dtype=np.float64)
    union = np.sum([r.union for r in recs], axis=0, dtype=np.float64)
    iou = np.divide(inter, union, out=np.zeros(2), where=union > 0)
    return {
        "n": len(recs),
        "pixel_accuracy": 100 * correct / labeled,
        "iou_background": 100 * float(iou[0]),
        "iou_foreground": 100 * float(iou[1]),
        "miou": 100 * float(iou.mean()),
        "map": 100 * float(np.mean([r.ap for r in recs])),
    }


@register_metric("segmentation")
class SegmentationFamily(MetricFamily):
    """Weakly supervised segmentation (Chefer et al., CVPR 2021): :func:`segmentation_record`."""

    label = "Segmentation"
    protocol_class = SegmentationProtocol

    def needs(self, protocol):
        return {"foreground"} | super().needs(protocol)

    def columns(self, protocol):
        return [{"key": "pixel_accuracy", "label": "Pixel accuracy", "better": "higher"},
                {"key": "miou", "label": "mIoU", "better": "higher"},
                {"key": "map", "label": "mAP", "better": "higher"},
                {"key": "iou_foreground", "label": "IoU foreground", "better": "higher"},
                {"key": "iou_background", "label": "IoU background", "better": "higher"}]

    def run(self, protocol, ctx):
        sal, cls = ctx.explained_map(protocol)
        mask = preprocess_mask(ctx.sample.foreground_mask(), protocol.preprocessing)
        rec = segmentation_record(sal, mask)
        return [{"class_id": cls, "variant": "", "data": rec.to_dict(), "saliency": sal}]

    def aggregate(self, protocol, records, *, class_names=None):
        return aggregate_segmentation(list(records))

    def summarise(self, protocol, records, class_names=None):
        agg = aggregate_segmentation(records)
        return {k: agg[k] for k in ("pixel_accuracy", "miou", "map", "iou_foreground", "iou_background")}, {}

    def record_score(self, data):
        return 100 * data["correct"] / data["labeled"] if data.get("labeled") else None
