"""Insertion and deletion (Petsiuk, Das and Saenko, "RISE", BMVC 2018).

Pixels are ordered by saliency, highest first (a stable sort, so ties keep raster order).
Insertion starts from a substrate and copies ``n`` original pixels in per step (all three
channels of a pixel together); deletion starts from the original and replaces ``n`` pixels
per step by a substrate. With ``N = H·W`` pixels there are ``ceil(N / n)`` steps and
``ceil(N / n) + 1`` points, both ends included. At each point the softmax probability of the
explained class is recorded; the score is

    AUC(y) = (Σ_i y_i − y_0 / 2 − y_last / 2) / (len(y) − 1) × 100,

the trapezoid rule on ``x ∈ [0, 1]`` with equal spacing. Overall = insertion − deletion.

All points of one image are pushed through the model as batch tensors, in chunks of an
explicit ``batch_size``; no forward pass per step. The points are produced by a pass
generator (:func:`causal_steps`, see :mod:`.passes`), so a shard's images share batches.

Example::

    rec = causal_record(model, pixels, saliency, target=281, protocol=get_protocol("thesis-v1"),
                        mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=64)
    rec.insertion_auc, rec.deletion_auc, rec.overall
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..imageops import image_and_map, gaussian_blur, normalize
from ..protocols import InsertionDeletionProtocol, Substrate
from .base import Cost, MetricFamily, model_device
from .passes import PassGenerator, drive_one
from .registry import register_metric

__all__ = [
    "CausalRecord",
    "auc",
    "pixel_order",
    "substrate_pixels",
    "causal_steps",
    "causal_curves",
    "causal_record",
    "record_from_curves",
    "probability_group",
    "group_labels",
    "aggregate_causal",
]

ModelFn = Callable[[torch.Tensor], torch.Tensor]


def auc(curve: Sequence[float]) -> float:
    """Trapezoid area under ``curve`` on ``x ∈ [0, 1]`` with equally spaced points (not ×100).

    ``(Σ y − y_0/2 − y_last/2) / (len(y) − 1)``; needs at least two points.
    """
    y = np.asarray(curve, dtype=np.float64)
    if y.ndim != 1 or y.size < 2:
        raise ValueError(f"a curve needs at least two points, got shape {y.shape}")
    return float((y.sum() - y[0] / 2 - y[-1] / 2) / (y.size - 1))


def pixel_order(saliency: torch.Tensor) -> torch.Tensor:
    """Flat pixel indices ``(H·W,)`` by decreasing saliency; equal values keep raster order."""
    flat = saliency.reshape(-1)
    # Sorting the negated values ascending with a stable sort keeps ties in raster order
    # (a descending stable sort does too, but negation makes the intent explicit).
    return torch.sort(-flat, stable=True).indices


def substrate_pixels(
    pixels: torch.Tensor, substrate: Substrate, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """The substrate of ``pixels`` (``3×H×W`` in [0, 1]) in the model's *normalised* space."""
    if substrate.kind == "blur":
        return normalize(gaussian_blur(pixels, substrate.kernel, substrate.sigma), mean, std)
    return torch.zeros_like(pixels)  # "zeros (normalised space)": the dataset-mean colour


#: Inputs a pass generator yields at a time: bounds the perturbed images held in memory (64 at
#: 224×224 are 38 MB); :func:`~.passes.drive` re-chunks them to the device's batch.
YIELD_AT_MOST = 64


def causal_steps(
    pixels: torch.Tensor,
    saliency: torch.Tensor | np.ndarray,
    target: int,
    *,
    protocol: InsertionDeletionProtocol,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> PassGenerator:
    """The pass generator (:mod:`.passes`) of one image's curves; returns what :func:`causal_curves` does.

    Yields the deletion points (``ceil(H·W/n) + 1`` inputs, the clean image first), then the
    insertion points, at most :data:`YIELD_AT_MOST` at a time, each ``B×3×H×W`` on ``device``.
    """
    if not isinstance(protocol, InsertionDeletionProtocol):
        raise TypeError(f"causal_curves needs an InsertionDeletionProtocol, got {type(protocol).__name__}")
    sal = image_and_map(pixels, saliency)
    height, width = pixels.shape[1:]
    dev = torch.device(device) if device is not None else pixels.device
    pixels = pixels.to(dev, torch.float32)
    original = normalize(pixels, mean, std)
    ins_start = substrate_pixels(pixels, protocol.insertion_substrate, mean, std)
    del_end = substrate_pixels(pixels, protocol.deletion_substrate, mean, std)

    n = height * width
    order = pixel_order(sal).to(dev)
    rank = torch.empty(n, dtype=torch.long, device=dev)
    rank[order] = torch.arange(n, device=dev)
    rank = rank.view(1, 1, height, width)
    steps = math.ceil(n / protocol.step)
    counts = torch.clamp(torch.arange(steps + 1, device=dev) * protocol.step, max=n)

    def curve(start: torch.Tensor, finish: torch.Tensor):
        probs, first_logits = [], None
        for chunk in counts.split(YIELD_AT_MOST):
            # Pixel j has switched to ``finish`` once its rank is below the step's count.
            logits = yield torch.where(rank < chunk.view(-1, 1, 1, 1), finish, start)
            if not 0 <= target < logits.shape[1]:
                raise ValueError(f"target class {target} is outside the model's {logits.shape[1]} classes")
            if first_logits is None:
                first_logits = logits[0].detach().cpu()
            probs.append(torch.softmax(logits, dim=1)[:, target].double().cpu())
        return torch.cat(probs).numpy(), first_logits

    deletion, clean_logits = yield from curve(original, del_end)
    insertion, _ = yield from curve(ins_start, original)
    return insertion, deletion, clean_logits.numpy()


def causal_curves(
    model: ModelFn,
    pixels: torch.Tensor,
    saliency: torch.Tensor | np.ndarray,
    target: int,
    *,
    protocol: InsertionDeletionProtocol,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The insertion and deletion curves of one image, and the clean logits.

    Args:
        model: normalised ``B×3×H×W`` → logits ``B×C``.
        pixels: the preprocessed image, ``3×H×W`` in ``[0, 1]``.
        saliency: ``H×W`` map (same size as ``pixels``); must be finite.
        target: the explained class.
        batch_size: how many perturbed images go through the model at once.

    Returns:
        ``(insertion, deletion, clean_logits)``: two float64 arrays of ``ceil(H·W/n) + 1``
        probabilities and the ``C`` logits of the unperturbed image (deletion's first point).
    """
    steps = causal_steps(pixels, saliency, target, protocol=protocol, mean=mean, std=std,
                         device=model_device(model, device))
    return drive_one(steps, model, batch_size=batch_size)


@dataclass(frozen=True)
class CausalRecord:
    """Insertion/deletion of one (image, method, class): curves, AUCs ×100, clean prediction."""

    target: int
    clean_top1: int
    clean_top1_prob: float
    insertion_auc: float
    deletion_auc: float
    insertion: tuple[float, ...]
    deletion: tuple[float, ...]

    @property
    def overall(self) -> float:
        return self.insertion_auc - self.deletion_auc

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["insertion"], data["deletion"] = list(self.insertion), list(self.deletion)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CausalRecord":
        return cls(
            target=int(data["target"]),
            clean_top1=int(data["clean_top1"]),
            clean_top1_prob=float(data["clean_top1_prob"]),
            insertion_auc=float(data["insertion_auc"]),
            deletion_auc=float(data["deletion_auc"]),
            insertion=tuple(map(float, data["insertion"])),
            deletion=tuple(map(float, data["deletion"])),
        )


def causal_record(
    model: ModelFn,
    pixels: torch.Tensor,
    saliency: torch.Tensor | np.ndarray,
    target: int,
    *,
    protocol: InsertionDeletionProtocol,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> CausalRecord:
    """Insertion and deletion of one image as a storable record (see :func:`causal_curves`)."""
    curves = causal_curves(model, pixels, saliency, target, protocol=protocol, mean=mean, std=std,
                           batch_size=batch_size, device=device)
    return record_from_curves(target, *curves)


def record_from_curves(target: int, insertion: np.ndarray, deletion: np.ndarray, logits: np.ndarray) -> CausalRecord:
    """The record of :func:`causal_curves`'s ``(insertion, deletion, clean_logits)``."""
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=0)
    top1 = int(torch.argmax(probs))
    return CausalRecord(
        target=int(target),
        clean_top1=top1,
        clean_top1_prob=float(probs[top1]),
        insertion_auc=100 * auc(insertion),
        deletion_auc=100 * auc(deletion),
        insertion=tuple(float(v) for v in insertion),
        deletion=tuple(float(v) for v in deletion),
    )


def probability_group(probability: float, edges: Sequence[float]) -> int:
    """Index of the clean top-1 probability group: ``i`` such that ``edges[i-1] <= p < edges[i]``.

    With the default edges ``(0.1, …, 0.9, 0.9999)`` groups 0–8 are ``[10 k %, 10 (k+1) %)``,
    group 9 is ``[90 %, 99.99 %)`` and group 10 is ``[99.99 %, 100 %]``.
    """
    for i, edge in enumerate(edges):
        if probability < edge:
            return i
    return len(edges)


def group_labels(edges: Sequence[float]) -> list[str]:
    """Human-readable labels of the groups :func:`probability_group` returns."""
    bounds = [0.0, *edges]
    labels = [f"[{_pct(lo)}, {_pct(hi)})" for lo, hi in zip(bounds[:-1], bounds[1:])]
    return labels + [f"[{_pct(bounds[-1])}, 100%]"]


def _pct(value: float) -> str:
    return f"{value * 100:.4g}%"


def aggregate_causal(
    records: Iterable[CausalRecord | Mapping[str, Any]], protocol: InsertionDeletionProtocol
) -> dict[str, Any]:
    """Per-image averages of insertion, deletion and overall, overall and per probability group.

    Returns ``{"n", "insertion", "deletion", "overall", "insertion_curve", "deletion_curve",
    "groups": [{"label", "n", "insertion", "deletion", "overall"}, …]}``; the mean curves are
    ``None`` when the records' curves differ in length. Empty groups have ``n = 0`` and
    ``None`` scores.
    """
    recs = [r if isinstance(r, CausalRecord) else CausalRecord.from_dict(r) for r in records]
    edges = tuple(protocol.group_edges)
    labels = group_labels(edges)

    def summary(subset: list[CausalRecord]) -> dict[str, Any]:
        if not subset:
            return {"n": 0, "insertion": None, "deletion": None, "overall": None}
        ins = float(np.mean([r.insertion_auc for r in subset]))
        dele = float(np.mean([r.deletion_auc for r in subset]))
        return {"n": len(subset), "insertion": ins, "deletion": dele, "overall": ins - dele}

    out = summary(recs)
    lengths = {len(r.insertion) for r in recs} | {len(r.deletion) for r in recs}
    if recs and len(lengths) == 1:
        out["insertion_curve"] = np.mean([r.insertion for r in recs], axis=0).tolist()
        out["deletion_curve"] = np.mean([r.deletion for r in recs], axis=0).tolist()
    else:
        out["insertion_curve"] = out["deletion_curve"] = None
    buckets: list[list[CausalRecord]] = [[] for _ in labels]
    for r in recs:
        buckets[probability_group(r.clean_top1_prob, edges)].append(r)
    out["groups"] = [{"label": label, **summary(bucket)} for label, bucket in zip(labels, buckets)]
    return out


@register_metric("insertion-deletion")
class CausalFamily(MetricFamily):
    """Insertion and deletion (Petsiuk et al., BMVC 2018): :func:`causal_record` per image."""

    label = "Insertion / deletion"
    protocol_class = InsertionDeletionProtocol

    def cost(self, protocol, *, model_layers=0):
        size = protocol.preprocessing.size
        return Cost(explainer_runs=1, model_passes=2 * (math.ceil(size * size / protocol.step) + 1))

    def columns(self, protocol):
        return [{"key": "insertion", "label": "Insertion AUC", "better": "higher"},
                {"key": "deletion", "label": "Deletion AUC", "better": "lower"},
                {"key": "overall", "label": "Overall", "better": "higher"}]

    def plots(self, protocol):
        return [
            {"kind": "line", "title": "Mean insertion curve", "x_label": "fraction of pixels inserted",
             "y_label": "probability", "y_min": 0, "y_max": 1, "series": [{"y": "insertion_curve"}]},
            {"kind": "line", "title": "Mean deletion curve", "x_label": "fraction of pixels deleted",
             "y_label": "probability", "y_min": 0, "y_max": 1, "series": [{"y": "deletion_curve"}]},
            {"kind": "bars", "title": "Overall (insertion − deletion) by clean top-1 confidence",
             "y_label": "overall ×100", "groups": "groups.*.label", "values": "groups.*.overall"},
        ]

    def steps(self, protocol, ctx):
        sal, cls = ctx.explained_map(protocol)
        pixels = ctx.pixels(protocol.preprocessing)
        curves = yield from causal_steps(pixels, sal, cls, protocol=protocol, mean=ctx.mean, std=ctx.std,
                                         device=ctx.model_device())
        return [{"class_id": cls, "variant": "", "data": record_from_curves(cls, *curves).to_dict(), "saliency": sal}]

    def aggregate(self, protocol, records, *, class_names=None):
        return aggregate_causal(list(records), protocol)

    def summarise(self, protocol, records, class_names=None):
        agg = aggregate_causal(records, protocol)
        return ({k: agg[k] for k in ("insertion", "deletion", "overall")},
                {"insertion_curve": agg["insertion_curve"], "deletion_curve": agg["deletion_curve"],
                 "groups": agg["groups"]})

    def record_score(self, data):
        return data["insertion_auc"] - data["deletion_auc"]
