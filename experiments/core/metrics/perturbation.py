"""Positive and negative perturbation (Chefer, Gur and Wolf, CVPR 2021).

For each fraction ``p`` in the protocol (``0, 0.1, …, 0.9``) the ``⌊p·H·W⌋`` pixels with the
highest saliency (positive) or the lowest (negative) are set to ``fill`` (0, black) in pixel
space ``[0, 1]``; the result is normalised and classified. A stable sort orders the pixels,
so ties keep raster order. The metric is top-1 accuracy against the ground-truth label over
the data set at every ``p``; ``p = 0`` is the clean accuracy. The score is the trapezoid
area over ``x = fractions`` ×100 (at most 90 for ``0 … 0.9``); overall = negative − positive.
A good map keeps accuracy up when the *least* salient pixels go (high negative) and drops it
fast when the *most* salient go (low positive).

Example::

    rec = perturbation_record(model, pixels, saliency, label=281, explained=281, mode="predicted",
                              protocol=get_protocol("chefer-perturbation-v1"), mean=..., std=...)
    aggregate_perturbation([rec, ...], protocol)["predicted"]["overall"]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..imageops import image_and_map, normalize
from ..protocols import PerturbationProtocol
from .base import Cost, MetricFamily, model_device
from .passes import PassGenerator, drive_one
from .causal import pixel_order
from .registry import register_metric

__all__ = ["PerturbationRecord", "removed_counts", "perturbation_steps", "perturbation_record", "aggregate_perturbation"]


def removed_counts(fractions: Sequence[float], num_pixels: int) -> list[int]:
    """How many pixels each fraction removes: ``⌊p·N⌋`` (a tiny epsilon absorbs float error)."""
    return [min(num_pixels, math.floor(p * num_pixels + 1e-9)) for p in fractions]


@dataclass(frozen=True)
class PerturbationRecord:
    """One (image, method, class, mode): the top-1 prediction after each perturbation step."""

    label: int
    explained: int
    mode: str
    fractions: tuple[float, ...]
    positive: tuple[int, ...]
    negative: tuple[int, ...]

    @property
    def positive_correct(self) -> tuple[bool, ...]:
        return tuple(p == self.label for p in self.positive)

    @property
    def negative_correct(self) -> tuple[bool, ...]:
        return tuple(p == self.label for p in self.negative)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "explained": self.explained,
            "mode": self.mode,
            "fractions": list(self.fractions),
            "positive": list(self.positive),
            "negative": list(self.negative),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PerturbationRecord":
        return cls(
            label=int(data["label"]),
            explained=int(data["explained"]),
            mode=str(data["mode"]),
            fractions=tuple(map(float, data["fractions"])),
            positive=tuple(map(int, data["positive"])),
            negative=tuple(map(int, data["negative"])),
        )


def perturbation_steps(
    pixels: torch.Tensor,
    saliency: torch.Tensor | np.ndarray,
    *,
    label: int,
    explained: int,
    mode: str,
    protocol: PerturbationProtocol,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> PassGenerator:
    """The pass generator (:mod:`.passes`) of :func:`perturbation_record`: one batch of the
    ``2·len(fractions) − 1`` images (``p = 0`` once); returns the record."""
    if not isinstance(protocol, PerturbationProtocol):
        raise TypeError(f"perturbation_record needs a PerturbationProtocol, got {type(protocol).__name__}")
    if mode not in ("predicted", "target"):
        raise ValueError(f"mode must be 'predicted' or 'target', not {mode!r}")
    sal = image_and_map(pixels, saliency)
    height, width = pixels.shape[1:]
    dev = torch.device(device) if device is not None else pixels.device
    pixels = pixels.to(dev, torch.float32)
    n = height * width
    counts = removed_counts(protocol.fractions, n)
    highest_first = pixel_order(sal).to(dev)
    lowest_first = torch.sort(sal.reshape(-1), stable=True).indices.to(dev)

    def removal_rank(order: torch.Tensor) -> torch.Tensor:
        rank = torch.empty(n, dtype=torch.long, device=dev)
        rank[order] = torch.arange(n, device=dev)
        return rank.view(1, 1, height, width)

    ranks = [removal_rank(highest_first), removal_rank(lowest_first)]
    # Row 0 is the clean image; then positive p>0 rows, then negative p>0 rows.
    rows = [(0, 0)] + [(0, c) for c in counts[1:]] + [(1, c) for c in counts[1:]]
    fill = torch.tensor(float(protocol.fill), device=dev)
    removed = torch.cat([ranks[kind] < count for kind, count in rows])
    logits = yield normalize(torch.where(removed, fill, pixels), mean, std)
    predictions = [int(i) for i in logits.argmax(dim=1).cpu()]
    k = len(counts) - 1
    clean = predictions[0]
    return PerturbationRecord(
        label=int(label),
        explained=int(explained),
        mode=mode,
        fractions=tuple(float(f) for f in protocol.fractions),
        positive=(clean, *predictions[1:1 + k]),
        negative=(clean, *predictions[1 + k:]),
    )


def perturbation_record(
    model: Callable[[torch.Tensor], torch.Tensor],
    pixels: torch.Tensor,
    saliency: torch.Tensor | np.ndarray,
    *,
    label: int,
    explained: int,
    mode: str,
    protocol: PerturbationProtocol,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> PerturbationRecord:
    """Classify the positively and negatively perturbed versions of one image.

    Args:
        model: normalised ``B×3×H×W`` → logits ``B×C``.
        pixels: ``3×H×W`` in ``[0, 1]`` (224×224 resize for the published protocol).
        saliency: ``H×W`` map for class ``explained``.
        label: the ground-truth class accuracy is measured against.
        mode: ``"predicted"`` or ``"target"``: which class was explained (stored, not used).

    All ``2·len(fractions) − 1`` images (``p = 0`` once) go through the model in chunks of
    ``batch_size``.
    """
    steps = perturbation_steps(pixels, saliency, label=label, explained=explained, mode=mode, protocol=protocol,
                               mean=mean, std=std, device=model_device(model, device))
    return drive_one(steps, model, batch_size=batch_size)


def _trapezoid(y: Sequence[float], x: Sequence[float]) -> float:
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def aggregate_perturbation(
    records: Iterable[PerturbationRecord | Mapping[str, Any]], protocol: PerturbationProtocol
) -> dict[str, Any]:
    """Accuracy curves and AUCs ×100 per mode.

    Accuracy at each ``p`` is pooled over the records of that mode (correct / records);
    ``{"predicted": {"n", "fractions", "positive_accuracy", "negative_accuracy", "positive",
    "negative", "overall"}, "target": …}`` with the AUCs ``positive``, ``negative`` and
    ``overall = negative − positive``. Modes without records are left out.
    """
    recs = [r if isinstance(r, PerturbationRecord) else PerturbationRecord.from_dict(r) for r in records]
    fractions = tuple(float(f) for f in protocol.fractions)
    out: dict[str, Any] = {}
    for mode in ("predicted", "target"):
        subset = [r for r in recs if r.mode == mode]
        if not subset:
            continue
        for r in subset:
            if r.fractions != fractions:
                raise ValueError(f"a record has fractions {r.fractions}, the protocol {fractions}; aggregate one protocol at a time")
        pos = np.mean([r.positive_correct for r in subset], axis=0)
        neg = np.mean([r.negative_correct for r in subset], axis=0)
        positive, negative = 100 * _trapezoid(pos, fractions), 100 * _trapezoid(neg, fractions)
        out[mode] = {
            "n": len(subset),
            "fractions": list(fractions),
            "positive_accuracy": pos.tolist(),
            "negative_accuracy": neg.tolist(),
            "positive": positive,
            "negative": negative,
            "overall": negative - positive,
        }
    return out


@register_metric("perturbation")
class PerturbationFamily(MetricFamily):
    """Positive and negative perturbation (Chefer et al., CVPR 2021): :func:`perturbation_record`."""

    label = "Positive / negative perturbation"
    protocol_class = PerturbationProtocol

    def needs(self, protocol):
        return {"labels"}

    def cost(self, protocol, *, model_layers=0):
        modes = len(protocol.explain)
        return Cost(explainer_runs=modes, model_passes=modes * (2 * len(protocol.fractions) - 1))

    def columns(self, protocol):
        cols = []
        for mode in protocol.explain:
            cols += [{"key": f"{mode}.positive", "label": f"Positive AUC ({mode})", "better": "lower"},
                     {"key": f"{mode}.negative", "label": f"Negative AUC ({mode})", "better": "higher"},
                     {"key": f"{mode}.overall", "label": f"Overall ({mode})", "better": "higher"}]
        return cols

    def plots(self, protocol):
        return [{"kind": "line", "title": f"Accuracy vs fraction removed ({mode} class)", "x_label": "fraction removed",
                 "y_label": "top-1 accuracy", "y_min": 0, "y_max": 1,
                 "series": [{"x": f"modes.{mode}.fractions", "y": f"modes.{mode}.positive_accuracy", "suffix": " (positive)", "dashed": False},
                            {"x": f"modes.{mode}.fractions", "y": f"modes.{mode}.negative_accuracy", "suffix": " (negative)", "dashed": True}]}
                for mode in ("predicted", "target")]

    def steps(self, protocol, ctx):
        label = ctx.label()
        out = []
        for mode in protocol.explain:
            [(sal, cls)] = ctx.maps(protocol.preprocessing, [label if mode == "target" else None])
            pixels = ctx.pixels(protocol.preprocessing)
            rec = yield from perturbation_steps(pixels, sal, label=label, explained=cls, mode=mode, protocol=protocol,
                                                mean=ctx.mean, std=ctx.std, device=ctx.model_device())
            out.append({"class_id": cls, "variant": mode, "data": rec.to_dict(), "saliency": sal})
        return out

    def aggregate(self, protocol, records, *, class_names=None):
        return aggregate_perturbation(list(records), protocol)

    def summarise(self, protocol, records, class_names=None):
        agg = aggregate_perturbation(records, protocol)
        values = {f"{mode}.{k}": agg.get(mode, {}).get(k) for mode in protocol.explain
                  for k in ("positive", "negative", "overall")}
        return values, {"modes": agg}

    def record_score(self, data):
        label = data["label"]
        return 100 * (sum(p == label for p in data["negative"]) - sum(p == label for p in data["positive"])) / len(data["negative"])
