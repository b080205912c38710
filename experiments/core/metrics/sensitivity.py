"""Max-sensitivity (Yeh, Hsieh, Suggala, Inouye and Ravikumar, "On the (In)fidelity and
Sensitivity of Explanations", NeurIPS 2019).

How much the explanation moves under a small change of the input::

    SENS_MAX(Φ, f, x, r) = max_{‖x' − x‖_∞ ≤ r} ‖Φ(f, x') − Φ(f, x)‖ / ‖Φ(f, x)‖,

estimated, as in the paper's experiments, by the largest value over ``T`` inputs
``x' = x + u``, ``u`` uniform in ``[−r, r]`` per value in pixel space (not clipped), each
explained again by the method under test for the same class. Norms are Frobenius norms of
the ``H×W`` maps; the ratio is relative to the clean map's norm (undefined, ``None``, for an
all-zero map). Lower is better. The draws come from a generator seeded with
``seed · 1 000 003 + image index``. The cost is ``T`` extra explainer runs per image.

The authors' reference code divides the running maximum by the norm inside its loop, so
with more than one sample it divides more than once; the formula above divides once.
Quantus 0.6.0's ``MaxSensitivity`` (``similarity_func=difference``, Frobenius norms,
``normalise=False``) computes the same ratio; fed the same perturbed inputs it agrees (tested).

Shapes: ``pixels`` ``C×H×W`` in ``[0, 1]``, ``saliency`` ``H×W``, ``perturbations`` ``T×C×H×W``;
``explain(batch, targets)`` maps normalised ``B×C×H×W`` inputs to ``B×H×W`` maps.

Example::

    perts = uniform_perturbations((3, 224, 224), samples=5, radius=0.02, seed=0, index=0)
    worst, ratios = max_sensitivity(lambda b, t: my_maps(model, b, t), pixels, saliency, 281,
                                    perturbations=perts, mean=IMAGENET_MEAN, std=IMAGENET_STD)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..imageops import as_map, normalize
from ..protocols import MaxSensitivityProtocol
from .base import Cost, MetricFamily, nanmean
from .registry import register_metric

__all__ = ["uniform_perturbations", "max_sensitivity", "SensitivityRecord"]


def uniform_perturbations(shape: Sequence[int], *, samples: int, radius: float, seed: int, index: int = 0) -> np.ndarray:
    """``samples × C×H×W`` float64 draws, uniform in ``[−radius, radius]`` per value."""
    rng = np.random.default_rng(seed * 1_000_003 + index)
    return rng.uniform(-radius, radius, size=(samples, *shape))


def max_sensitivity(explain: Callable[[torch.Tensor, list[int]], torch.Tensor], pixels: torch.Tensor, saliency,
                    target: int, *, perturbations: np.ndarray, mean: Sequence[float], std: Sequence[float],
                    batch_size: int = 16, device: torch.device | str | None = None) -> tuple[float | None, list[float]]:
    """``(max ratio, ratio per perturbation)`` of one image; ``None`` when the clean map is all zero."""
    sal = as_map(saliency).double()
    if pixels.dim() != 3 or tuple(sal.shape) != tuple(pixels.shape[1:]):
        raise ValueError(f"need C×H×W pixels and an H×W map, got {tuple(pixels.shape)} and {tuple(sal.shape)}")
    perts = np.asarray(perturbations, dtype=np.float64)
    if perts.ndim != 4 or perts.shape[1:] != tuple(pixels.shape):
        raise ValueError(f"perturbations must be T×{'×'.join(map(str, pixels.shape))}, got {perts.shape}")
    norm = float(torch.linalg.norm(sal))
    x = pixels.detach().float().cpu()
    ratios: list[float] = []
    for chunk in torch.from_numpy(perts).float().split(batch_size):
        batch = normalize(x[None] + chunk, mean, std)
        if device is not None:
            batch = batch.to(device)
        maps = torch.as_tensor(explain(batch, [int(target)] * len(chunk))).detach().double().cpu()
        if maps.shape != (len(chunk), *sal.shape):
            raise ValueError(f"the explainer returned maps of shape {tuple(maps.shape)}, expected {(len(chunk), *sal.shape)}")
        ratios += [float(torch.linalg.norm(m - sal)) for m in maps]
    if norm == 0:
        return None, []
    ratios = [r / norm for r in ratios]
    return max(ratios), ratios


@dataclass(frozen=True)
class SensitivityRecord:
    target: int
    max_sensitivity: float | None
    ratios: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = list(self.ratios)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SensitivityRecord":
        return cls(int(data["target"]), data.get("max_sensitivity"), tuple(map(float, data.get("ratios", ()))))


@register_metric("max-sensitivity")
class MaxSensitivityFamily(MetricFamily):
    """Max-sensitivity: ``samples`` perturbed inputs re-explained; see the module docstring."""

    label = "Max-sensitivity"
    protocol_class = MaxSensitivityProtocol

    def cost(self, protocol, *, model_layers=0):
        # the clean map plus one explanation of every perturbed input
        return Cost(explainer_runs=1 + protocol.samples, model_passes=0)

    def columns(self, protocol):
        return [{"key": "max_sensitivity", "label": "Max-sensitivity", "better": "lower"}]

    def run(self, protocol, ctx):
        sal, cls = ctx.explained_map(protocol)
        pixels = ctx.pixels(protocol.preprocessing)
        perts = uniform_perturbations(tuple(pixels.shape), samples=protocol.samples, radius=protocol.radius,
                                      seed=ctx.seed, index=ctx.index)
        device = ctx.inputs(protocol.preprocessing)[1].device
        worst, ratios = max_sensitivity(lambda batch, targets: ctx.explain_batch(batch, targets), pixels, sal, cls,
                                        perturbations=perts, mean=ctx.mean, std=ctx.std, device=device)
        rec = SensitivityRecord(cls, worst, tuple(ratios))
        return [{"class_id": cls, "variant": "", "data": rec.to_dict(), "saliency": sal}]

    def aggregate(self, protocol, records: Iterable[Any], *, class_names=None):
        recs = [r if isinstance(r, SensitivityRecord) else SensitivityRecord.from_dict(r) for r in records]
        return {"n": len(recs), "max_sensitivity": nanmean(r.max_sensitivity for r in recs),
                "undefined": sum(r.max_sensitivity is None for r in recs)}

    def summarise(self, protocol, records, class_names=None):
        agg = self.aggregate(protocol, records)
        return {"max_sensitivity": agg["max_sensitivity"]}, {"undefined": agg["undefined"]}

    def record_score(self, data):
        return None if data.get("max_sensitivity") is None else float(data["max_sensitivity"])
