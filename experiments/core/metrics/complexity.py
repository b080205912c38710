"""Sparseness and complexity of a map: properties of the explanation alone, no model passes.

With ``a = |map|`` flattened to ``n`` values:

* **Sparseness** (Chalasani et al., "Concise explanations of neural networks using
  adversarial training", ICML 2020, after Hurley & Rickard 2009): the Gini index of ``a``
  sorted ascending, ``G = Σ_{i=1..n} (2i − n − 1) a_(i) / (n Σ a_(i))``. 0 when every pixel
  has the same value, ``(n − 1)/n`` when one pixel carries everything; higher is sparser.
* **Complexity** (Bhatt et al., "Evaluating and aggregating feature-based model
  explanations", IJCAI 2020): the Shannon entropy (natural log) of the fractional
  contributions ``P_i = a_i / Σ_j a_j``, ``H = −Σ P_i ln P_i`` with ``0 ln 0 = 0``. Between 0
  (one pixel) and ``ln n`` (uniform); lower is simpler.

Both are undefined for an all-zero map (``Σ a = 0``); the record stores ``None`` there.
Quantus 0.6.0's ``Sparseness`` adds 1e-7 to every value before the Gini formula, which moves
the index of maps with many exact zeros; this module follows the paper's formula.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from ..protocols import ComplexityProtocol
from .base import Cost, MetricFamily, nanmean
from .registry import register_metric


def gini(saliency: torch.Tensor | np.ndarray) -> float | None:
    """Gini index of ``|saliency|`` (Chalasani et al. 2020); ``None`` for an all-zero map."""
    a = np.sort(np.abs(np.asarray(saliency, dtype=np.float64)).ravel())
    n, total = a.size, a.sum()
    if n == 0 or total <= 0:
        return None
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * i - n - 1) * a) / (n * total))


def entropy(saliency: torch.Tensor | np.ndarray) -> float | None:
    """Entropy of the fractional contributions of ``|saliency|`` (Bhatt et al. 2020), natural log."""
    a = np.abs(np.asarray(saliency, dtype=np.float64)).ravel()
    total = a.sum()
    if a.size == 0 or total <= 0:
        return None
    p = a[a > 0] / total
    return float(-np.sum(p * np.log(p)))


@dataclass(frozen=True)
class ComplexityRecord:
    """Gini index and entropy of one map (``None`` for an all-zero map)."""

    target: int
    gini: float | None
    entropy: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ComplexityRecord":
        return cls(int(data["target"]), data.get("gini"), data.get("entropy"))


def complexity_record(saliency, target: int) -> ComplexityRecord:
    return ComplexityRecord(int(target), gini(saliency), entropy(saliency))


def aggregate_complexity(records: Iterable[ComplexityRecord | Mapping[str, Any]]) -> dict[str, Any]:
    """Means over images (all-zero maps left out and counted in ``undefined``)."""
    recs = [r if isinstance(r, ComplexityRecord) else ComplexityRecord.from_dict(r) for r in records]
    return {"n": len(recs), "gini": nanmean(r.gini for r in recs), "entropy": nanmean(r.entropy for r in recs),
            "undefined": sum(r.gini is None for r in recs)}


@register_metric("complexity")
class ComplexityFamily(MetricFamily):
    """Sparseness (Gini) and complexity (entropy) of the map; see the module docstring."""

    label = "Sparseness / complexity"
    protocol_class = ComplexityProtocol

    def cost(self, protocol, *, model_layers=0):
        return Cost(explainer_runs=1, model_passes=0)

    def columns(self, protocol):
        return [{"key": "gini", "label": "Sparseness (Gini)", "better": "higher"},
                {"key": "entropy", "label": "Complexity (entropy)", "better": "lower"}]

    def run(self, protocol, ctx):
        sal, cls = ctx.explained_map(protocol)
        return [{"class_id": cls, "variant": "", "data": complexity_record(sal, cls).to_dict(), "saliency": sal}]

    def aggregate(self, protocol, records, *, class_names=None):
        return aggregate_complexity(records)

    def summarise(self, protocol, records, class_names=None):
        agg = aggregate_complexity(records)
        return {"gini": agg["gini"], "entropy": agg["entropy"]}, {"undefined": agg["undefined"]}

    def record_score(self, data):
        return None if data.get("gini") is None else 100 * data["gini"]
