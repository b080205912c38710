"""Infidelity (Yeh, Hsieh, Suggala, Inouye and Ravikumar, "On the (In)fidelity and Sensitivity
of Explanations", NeurIPS 2019).

For a perturbation ``I`` (``C×H×W``) drawn from a distribution ``μ``, a map ``φ`` (``H×W``,
broadcast over the channels) should predict the change of the model's output::

    INFD(φ, f, x) = E_{I∼μ} [ (Iᵀ φ − (f(x) − f(x − I)))² ],    Iᵀφ = Σ_{c,h,w} I_{c,h,w} φ_{h,w},

with ``f`` the explained class's logit of the normalised input. Here ``μ`` is Gaussian noise,
``I ∼ N(0, σ² 𝟙)`` in pixel space ``[0, 1]`` (the paper's Proposition: for this ``μ`` the
optimal explanation of a linear model is its gradient; smoothed gradients in general), estimated
with ``T`` seeded samples (a generator seeded with ``seed · 1 000 003 + image index``).

Infidelity is not invariant to the map's scale, and saliency maps come on arbitrary scales,
so the paper (and its reference code) scales each map optimally first:
``β* = Σ_k a_k Δ_k / Σ_k a_k²`` with ``a_k = I_kᵀφ``, ``Δ_k = f(x) − f(x − I_k)``, and reports
``(1/T) Σ_k (β* a_k − Δ_k)²`` (``scaling="optimal"``, the protocol's default; an all-zero map
gets ``β* = 0``). ``scaling="none"`` keeps ``β = 1``. Lower is better.

The draws come in two precisions, the protocol's ``noise`` field (``gaussian_perturbations(dtype=...)``):

* ``"float64"`` (``yeh-infidelity-v1``): numpy's ``default_rng`` (PCG64), float64 normals, and
  ``a_k`` summed in float64 (``einsum``).
* ``"float32"`` (``yeh-infidelity-v2``): torch's CPU generator (``torch.randn`` with a
  ``torch.Generator`` seeded with the same ``seed · 1 000 003 + index``), float32 normals scaled
  by σ in place and kept float32 end to end: the model's input is made from them without a
  dtype conversion, and ``a_k`` is a float32 matrix–vector product over a ``(T·C)×(H·W)`` view; only
  the length-``T`` vectors (``a``, ``Δ``, then ``β*`` and the mean) are float64.

v2 differs from v1 only in the draws' precision and generator, not in the definition: at
``T = 10`` and 3×224×224, drawing ``T·C·H·W`` float64 normals took ~34 ms of CPU per image, about
a third of the evaluation's time and none of it a model pass; torch's float32 draws take less than
half of that (numpy's float32 ``standard_normal`` saved only a few milliseconds). The model sees
float32 perturbed inputs in both versions (``x − I`` takes the input's dtype), so v2's ``a_k``
are computed on exactly the values the model saw. The two versions draw different random numbers,
so their scores differ as two seeds' do. v2's draws are deterministic for ``(seed, index)`` on
one torch build and CPU kernel, but torch's vectorised (AVX2/AVX-512) and scalar normal kernels
differ in the last bit of some draws (2e-6 at most for σ = 1 in a 3×224×224 test), so machines that take
different kernels agree to about 1e-6 relative, not bit for bit; v1's draws are numpy's as before.

Quantus 0.6.0's ``Infidelity`` differs: it perturbs by replacing square patches with a
baseline (cumulatively, the same patches for every "sample") and applies no scaling. Fed our
Gaussian perturbations through its ``perturb_func`` with one patch covering the image, it
equals ``scaling="none"`` (tested); the optimal scaling is tested on its own.

Example::

    perts = gaussian_perturbations((3, 224, 224), samples=10, sigma=0.1, seed=0, index=0)   # v1
    perts = gaussian_perturbations((3, 224, 224), samples=10, sigma=0.1, seed=0, index=0,
                                   dtype="float32")                                         # v2
    score, beta, dots, drops = infidelity(model, pixels, saliency, 281, perturbations=perts,
                                          mean=IMAGENET_MEAN, std=IMAGENET_STD)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..imageops import as_map, normalize
from ..protocols import InfidelityProtocol
from .base import Cost, MetricFamily, model_device, nanmean
from .passes import PassGenerator, drive_one
from .registry import register_metric

__all__ = ["NOISE_DTYPES", "gaussian_perturbations", "infidelity", "infidelity_steps", "InfidelityRecord"]

#: The draws' precisions (:attr:`InfidelityProtocol.noise`); see the module docstring.
NOISE_DTYPES = ("float64", "float32")


def gaussian_perturbations(shape: Sequence[int], *, samples: int, sigma: float, seed: int, index: int = 0,
                           dtype: str = "float64") -> np.ndarray:
    """``samples × C×H×W`` draws of ``N(0, σ²)``, seeded with ``seed · 1 000 003 + index``.

    ``dtype="float64"`` (v1): numpy's ``default_rng`` float64 normals. ``dtype="float32"`` (v2):
    ``torch.randn`` float32 normals from a seeded ``torch.Generator``, returned as a float32
    array sharing the tensor's memory (no copy).
    """
    if dtype not in NOISE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, NOISE_DTYPES))}, not {dtype!r}")
    if dtype == "float32":
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        noise = torch.randn((samples, *shape), generator=generator, dtype=torch.float32)
        noise.mul_(sigma)   # in place, in float32
        return noise.numpy()
    rng = np.random.default_rng(seed * 1_000_003 + index)
    draws = rng.standard_normal((samples, *shape))
    draws *= sigma          # in place: the same values as ``sigma * draws``, without a second T×C×H×W array
    return draws


def infidelity_steps(pixels: torch.Tensor, saliency, target: int, *, perturbations: np.ndarray,
                     mean: Sequence[float], std: Sequence[float], scaling: str = "optimal",
                     device: torch.device | str | None = None) -> PassGenerator:
    """The pass generator (:mod:`.passes`) of :func:`infidelity`: one batch, the clean input
    then the ``T`` perturbed ones (``(T+1)×C×H×W``); returns what :func:`infidelity` does.

    float32 ``perturbations`` (v2's) stay float32 and their ``a_k`` are a float32 matrix–vector
    product; any other dtype is taken as float64 with ``a_k`` summed in float64 (v1's).
    """
    if scaling not in ("optimal", "none"):
        raise ValueError(f"scaling must be 'optimal' or 'none', not {scaling!r}")
    sal = as_map(saliency)
    if pixels.dim() != 3 or tuple(sal.shape) != tuple(pixels.shape[1:]):
        raise ValueError(f"need C×H×W pixels and an H×W map, got {tuple(pixels.shape)} and {tuple(sal.shape)}")
    single = getattr(perturbations, "dtype", None) == np.float32
    perts = np.asarray(perturbations, dtype=np.float32 if single else np.float64)
    if perts.ndim != 4 or perts.shape[1:] != tuple(pixels.shape):
        raise ValueError(f"perturbations must be T×{'×'.join(map(str, pixels.shape))}, got {perts.shape}")
    dev = torch.device(device) if device is not None else pixels.device
    x = pixels.detach().to(dev)
    noise = torch.from_numpy(perts)
    perturbed = x[None] - noise.to(dev, x.dtype)
    logits = yield normalize(torch.cat([x[None], perturbed]), mean, std)
    if not 0 <= target < logits.shape[1]:
        raise ValueError(f"class {target} is outside the model's {logits.shape[1]} classes")
    scores = logits[:, target].double().cpu().numpy()
    delta = scores[0] - scores[1:]
    if single:
        samples, channels = perts.shape[:2]
        per_channel = noise.reshape(samples * channels, -1) @ sal.reshape(-1)      # float32, (T·C,)
        dots = per_channel.double().numpy().reshape(samples, channels).sum(axis=1)
    else:
        dots = np.einsum("tchw,hw->t", perts, sal.double().numpy())
    if scaling == "optimal":
        energy = float(np.sum(dots * dots))
        beta = float(np.sum(dots * delta) / energy) if energy > 0 else 0.0
    else:
        beta = 1.0
    return float(np.mean((beta * dots - delta) ** 2)), beta, dots, delta


def infidelity(model, pixels: torch.Tensor, saliency, target: int, *, perturbations: np.ndarray,
               mean: Sequence[float], std: Sequence[float], scaling: str = "optimal", batch_size: int = 64,
               device: torch.device | str | None = None) -> tuple[float, float, np.ndarray, np.ndarray]:
    """``(infidelity, β, a, Δ)`` of one image; see the module docstring.

    ``pixels``: ``C×H×W`` in ``[0, 1]``; ``saliency``: ``H×W``; ``perturbations``: ``T×C×H×W``
    in pixel space, float64 (v1) or float32 (v2, kept float32). The clean and ``T`` perturbed
    inputs go through the model in chunks of ``batch_size``.
    """
    steps = infidelity_steps(pixels, saliency, target, perturbations=perturbations, mean=mean, std=std,
                             scaling=scaling, device=model_device(model, device))
    return drive_one(steps, model, batch_size=batch_size)


@dataclass(frozen=True)
class InfidelityRecord:
    target: int
    infidelity: float
    beta: float
    #: ``mean Δ²``: the infidelity of an all-zero map, the scale of this image's logit changes.
    mean_square_drop: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InfidelityRecord":
        return cls(int(data["target"]), float(data["infidelity"]), float(data["beta"]), float(data["mean_square_drop"]))


@register_metric("infidelity")
class InfidelityFamily(MetricFamily):
    """Infidelity with Gaussian perturbations and optimal scaling; see the module docstring."""

    label = "Infidelity"
    protocol_class = InfidelityProtocol

    def cost(self, protocol, *, model_layers=0):
        return Cost(explainer_runs=1, model_passes=protocol.samples + 1)

    def columns(self, protocol):
        return [{"key": "infidelity", "label": "Infidelity", "better": "lower"}]

    def steps(self, protocol, ctx):
        sal, cls = ctx.explained_map(protocol)
        pixels = ctx.pixels(protocol.preprocessing)
        perts = gaussian_perturbations(tuple(pixels.shape), samples=protocol.samples, sigma=protocol.sigma,
                                       seed=ctx.seed, index=ctx.index, dtype=protocol.noise)
        score, beta, _, delta = yield from infidelity_steps(pixels, sal, cls, perturbations=perts, mean=ctx.mean,
                                                            std=ctx.std, scaling=protocol.scaling,
                                                            device=ctx.model_device())
        rec = InfidelityRecord(cls, score, beta, float(np.mean(delta ** 2)))
        return [{"class_id": cls, "variant": "", "data": rec.to_dict(), "saliency": sal}]

    def aggregate(self, protocol, records: Iterable[Any], *, class_names=None):
        recs = [r if isinstance(r, InfidelityRecord) else InfidelityRecord.from_dict(r) for r in records]
        return {"n": len(recs), "infidelity": nanmean(r.infidelity for r in recs),
                "mean_square_drop": nanmean(r.mean_square_drop for r in recs)}

    def summarise(self, protocol, records, class_names=None):
        agg = self.aggregate(protocol, records)
        return {"infidelity": agg["infidelity"]}, {"mean_square_drop": agg["mean_square_drop"]}

    def record_score(self, data):
        return float(data["infidelity"])
