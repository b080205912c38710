"""Random-logit test (Sixt, Granz & Landgraf, "When explanations lie: why many modified BP
attributions fail", ICML 2020): a class-sensitive explanation of class ``c`` should differ
from the explanation of a class ``c'`` drawn uniformly at random from the other classes.

Per image: ``c'`` is drawn from ``{0 … C−1} \\ {c}`` by a generator seeded with
``seed · 1 000 003 + image index``; the similarity of ``m_c`` and ``m_c'`` is reported as

* the Spearman rank correlation ``ρ(m_c, m_c')`` of the signed maps (Pearson correlation of
  their ranks, ties averaged), and
* SSIM with Gaussian weights (σ = ``ssim_sigma``) of the min–max normalised maps, as the
  sanity checks compute it.

Lower is better for both (the map depends on the class). Quantus 0.6.0's ``RandomLogit``
draws ``c'`` with NumPy's global generator re-seeded with one seed for every batch, so the
same image gets the same other class in every run; it compares by one ``similarity_func``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..protocols import RandomLogitProtocol
from .base import Cost, MetricFamily, nanmean
from .registry import register_metric
from .sanity import spearman, ssim


def other_class(explained: int, num_classes: int, *, seed: int, index: int) -> int:
    """A class drawn uniformly from the ``num_classes − 1`` classes other than ``explained``."""
    if num_classes < 2:
        raise ValueError("the random-logit test needs a model with at least two classes")
    draw = int(np.random.default_rng(seed * 1_000_003 + index).integers(0, num_classes - 1))
    return draw if draw < explained else draw + 1


@dataclass(frozen=True)
class RandomLogitRecord:
    target: int
    other: int
    spearman: float | None
    ssim: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RandomLogitRecord":
        return cls(int(data["target"]), int(data["other"]), data.get("spearman"), data.get("ssim"))


def _finite(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def random_logit_record(saliency, other_saliency, *, target: int, other: int,
                        protocol: RandomLogitProtocol) -> RandomLogitRecord:
    a = np.asarray(torch.as_tensor(saliency, dtype=torch.float64).cpu())
    b = np.asarray(torch.as_tensor(other_saliency, dtype=torch.float64).cpu())
    return RandomLogitRecord(int(target), int(other), _finite(spearman(a, b)), _finite(ssim(a, b, sigma=protocol.ssim_sigma)))


def aggregate_random_logit(records: Iterable[RandomLogitRecord | Mapping[str, Any]]) -> dict[str, Any]:
    recs = [r if isinstance(r, RandomLogitRecord) else RandomLogitRecord.from_dict(r) for r in records]
    return {"n": len(recs), "spearman": nanmean(r.spearman for r in recs), "ssim": nanmean(r.ssim for r in recs)}


@register_metric("random-logit")
class RandomLogitFamily(MetricFamily):
    """Random-logit test; see the module docstring."""

    label = "Random logit"
    protocol_class = RandomLogitProtocol

    def cost(self, protocol, *, model_layers=0):
        return Cost(explainer_runs=2, model_passes=0)

    def columns(self, protocol):
        return [{"key": "spearman", "label": "Random-logit Spearman", "better": "lower"},
                {"key": "ssim", "label": "Random-logit SSIM", "better": "lower"}]

    def run(self, protocol, ctx):
        sal, cls = ctx.explained_map(protocol)
        classes = ctx.num_classes
        if classes is None:
            with torch.no_grad():
                classes = int(ctx.model(ctx.inputs(protocol.preprocessing)[1]).shape[1])
        other = other_class(cls, classes, seed=ctx.seed, index=ctx.index)
        [(other_sal, _)] = ctx.maps(protocol.preprocessing, [other])
        rec = random_logit_record(sal, other_sal, target=cls, other=other, protocol=protocol)
        return [{"class_id": cls, "variant": "", "data": rec.to_dict(), "saliency": sal}]

    def aggregate(self, protocol, records, *, class_names=None):
        return aggregate_random_logit(records)

    def summarise(self, protocol, records, class_names=None):
        agg = aggregate_random_logit(records)
        return {"spearman": agg["spearman"], "ssim": agg["ssim"]}, {}

    def record_score(self, data):
        return None if data.get("spearman") is None else float(data["spearman"])
