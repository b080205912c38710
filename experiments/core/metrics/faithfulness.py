"""Faithfulness correlation (Bhatt, Weller & Moura, "Evaluating and aggregating feature-based
model explanations", IJCAI 2020).

For ``T`` random subsets ``S_t`` of ``|S|`` pixels (drawn without replacement, a generator
seeded with ``seed · 1 000 003 + image index``), set those pixels (all channels) to ``fill``
in pixel space and record the drop of the explained class's logit,
``Δ_t = f_c(x) − f_c(x_{S_t ← fill})``. The score is the Pearson correlation
``corr_t(Σ_{i∈S_t} m_i, Δ_t)`` between the map's mass on the subset and the drop; higher is
more faithful. ``None`` when either side is constant.

Quantus 0.6.0's ``FaithfulnessCorrelation`` draws its subsets over the ``C·H·W`` values of
the input (a map is broadcast over channels), so a "pixel" there is one channel value; the
paper's features here are pixels, removed with all their channels. On one-channel inputs the
two coincide (tested).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..imageops import normalize
from ..protocols import FaithfulnessCorrelationProtocol
from .base import Cost, MetricFamily, model_device, nanmean
from .passes import PassGenerator, drive_one
from .registry import register_metric


def random_subsets(num_pixels: int, size: int, runs: int, *, seed: int, index: int = 0) -> np.ndarray:
    """``runs × size`` pixel indices, each row drawn without replacement."""
    rng = np.random.default_rng(seed * 1_000_003 + index)
    return np.stack([rng.choice(num_pixels, size, replace=False) for _ in range(runs)])


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else None


#: Perturbed inputs a pass generator yields at a time (64 at 224×224 are 38 MB).
YIELD_AT_MOST = 64


def faithfulness_steps(pixels: torch.Tensor, saliency, target: int, *, subsets: np.ndarray,
                       mean: Sequence[float], std: Sequence[float], fill: float = 0.0,
                       device: torch.device | str | None = None) -> PassGenerator:
    """The pass generator (:mod:`.passes`) of :func:`faithfulness_correlation`: the clean input
    and the ``T`` perturbed ones, at most :data:`YIELD_AT_MOST` at a time; returns what it does."""
    dev = torch.device(device) if device is not None else pixels.device
    channels = pixels.shape[0]
    flat_map = torch.as_tensor(saliency, dtype=torch.float64).reshape(-1).cpu().numpy()
    idx = torch.as_tensor(subsets, dtype=torch.long)
    scores = []
    for start in range(0, len(idx), YIELD_AT_MOST):
        chunk = idx[start:start + YIELD_AT_MOST]
        batch = pixels.reshape(1, channels, -1).repeat(len(chunk), 1, 1)
        rows = torch.arange(len(chunk))[:, None].expand_as(chunk)
        batch.permute(0, 2, 1)[rows, chunk] = fill          # every channel of each chosen pixel
        batch = batch.reshape(len(chunk), *pixels.shape)
        if start == 0:                                      # the clean image rides with the first chunk
            batch = torch.cat([pixels[None], batch])
        logits = yield normalize(batch, mean, std).to(dev)
        scores.append(logits[:, target].double().cpu().numpy())
    scores = np.concatenate(scores) if scores else np.zeros(0)
    drops = scores[0] - scores[1:]
    sums = flat_map[subsets].sum(axis=1)
    return pearson(sums, drops), sums, drops


def faithfulness_correlation(model, pixels: torch.Tensor, saliency, target: int, *, subsets: np.ndarray,
                             mean: Sequence[float], std: Sequence[float], fill: float = 0.0,
                             batch_size: int = 64) -> tuple[float | None, np.ndarray, np.ndarray]:
    """``(correlation, saliency sums, logit drops)`` of one image; see the module docstring.

    ``pixels``: ``C×H×W`` in ``[0, 1]``; ``saliency``: ``H×W``; ``subsets``: ``T×|S|`` flat
    pixel indices (:func:`random_subsets`). The clean and the perturbed inputs go through the
    model in batches of ``batch_size``.
    """
    steps = faithfulness_steps(pixels, saliency, target, subsets=subsets, mean=mean, std=std, fill=fill,
                               device=model_device(model, None))
    return drive_one(steps, model, batch_size=batch_size)


@dataclass(frozen=True)
class FaithfulnessRecord:
    target: int
    correlation: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FaithfulnessRecord":
        return cls(int(data["target"]), data.get("correlation"))


@register_metric("faithfulness-correlation")
class FaithfulnessCorrelationFamily(MetricFamily):
    """Faithfulness correlation; see the module docstring."""

    label = "Faithfulness correlation"
    protocol_class = FaithfulnessCorrelationProtocol

    def cost(self, protocol, *, model_layers=0):
        return Cost(explainer_runs=1, model_passes=protocol.runs + 1)

    def columns(self, protocol):
        return [{"key": "correlation", "label": "Faithfulness correlation", "better": "higher"}]

    def steps(self, protocol, ctx):
        sal, cls = ctx.explained_map(protocol)
        pixels = ctx.pixels(protocol.preprocessing)
        subsets = random_subsets(pixels.shape[-2] * pixels.shape[-1], protocol.subset, protocol.runs,
                                 seed=ctx.seed, index=ctx.index)
        corr, _, _ = yield from faithfulness_steps(pixels, sal, cls, subsets=subsets, mean=ctx.mean, std=ctx.std,
                                                   fill=protocol.fill, device=ctx.model_device())
        return [{"class_id": cls, "variant": "", "data": FaithfulnessRecord(cls, corr).to_dict(), "saliency": sal}]

    def aggregate(self, protocol, records: Iterable[Any], *, class_names=None):
        recs = [r if isinstance(r, FaithfulnessRecord) else FaithfulnessRecord.from_dict(r) for r in records]
        return {"n": len(recs), "correlation": nanmean(r.correlation for r in recs),
                "undefined": sum(r.correlation is None for r in recs)}

    def summarise(self, protocol, records, class_names=None):
        agg = self.aggregate(protocol, records)
        return {"correlation": agg["correlation"]}, {"undefined": agg["undefined"]}

    def record_score(self, data):
        return None if data.get("correlation") is None else float(data["correlation"])
