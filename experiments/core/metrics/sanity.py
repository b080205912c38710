"""Model-parameter randomisation tests (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

A map that barely changes when the model's weights are destroyed does not explain the model.
Two schedules, both on a deep copy (the caller's model is never touched):

* cascading: re-initialise layers from the output backwards, one more at each step (the
  classifier first, then towards the input);
* independent: re-initialise one layer at a time, all others keep their trained weights.

**What counts as a layer.** A module that owns parameters directly (``recurse=False``) and
is not a normalisation layer (BatchNorm/LayerNorm/GroupNorm/InstanceNorm), ordered by when
its forward first runs on the probe batch (``forward_pre_hook``), so the order follows the
data flow even where definition order does not. Norm layers are left trained because their
default initialisation (scale 1, shift 0) is not random and would add steps that test
nothing. Modules that never run are not layers. Re-initialisation calls the module's own
``reset_parameters()`` (PyTorch's default initialisation for that layer type) under a seeded
generator; a module without one (e.g. a ViT root owning ``cls_token``/``pos_embed``) gets
``N(0, 0.02²)`` for every direct parameter.

At each step the map for the *same* class is compared with the original map by

* Spearman rank correlation of ``|map|`` and of the signed map,
* SSIM with Gaussian weights (σ = 1.5, Wang et al. 2004 constants, data range 1) of the
  min–max normalised maps,
* Spearman correlation of the HOG features (``skimage.feature.hog``, 16-px cells) of the
  min–max normalised maps.

A constant map makes a correlation undefined: that value is NaN, and the aggregate reports
how many NaNs it skipped.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.feature import hog
from torch import nn

from ..protocols import SanityProtocol
from .base import Cost, MetricFamily
from .registry import register_metric

__all__ = [
    "Explainer",
    "randomizable_layers",
    "randomization_steps",
    "spearman",
    "ssim",
    "hog_similarity",
    "similarities",
    "SanityRecord",
    "sanity_records",
    "aggregate_sanity",
]

#: ``(model, normalised batch B×3×H×W, targets (B,)) → maps B×h×w``.
Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def randomizable_layers(model: nn.Module, probe: torch.Tensor) -> list[str]:
    """Names of the layers (see module docstring), input to output; ``""`` is the root module.

    ``probe`` is a normalised batch run once (no gradients) to record the call order.
    """
    owners = {
        name: module
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False)) and not isinstance(module, _NORMS)
    }
    order: list[str] = []
    handles = []
    for name, module in owners.items():
        def pre_hook(_module, _inputs, name=name):
            if name not in order:
                order.append(name)
        handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError("the model has no parameterised layer that runs on the probe batch; nothing to randomise")
    return order


def _reinitialise(module: nn.Module, seed: int) -> None:
    # Fork every generator the parameters use, so the caller's random state is left as it was.
    cuda = sorted({p.device.index or 0 for p in module.parameters(recurse=False) if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        with torch.no_grad():
            reset = getattr(type(module), "reset_parameters", None)
            if callable(reset):
                module.reset_parameters()
            else:
                for p in module.parameters(recurse=False):
                    p.normal_(0.0, 0.02)


def randomization_steps(
    model: nn.Module, mode: str, layers: Sequence[str], *, seed: int = 0
) -> Iterator[tuple[int, str, nn.Module]]:
    """Yield ``(step, layer, randomised copy)`` for each step; ``layers`` are input to output.

    Cascading yields one copy, randomised further at each step (the output layer first).
    Independent re-initialises one layer, yields, then restores it. Layer ``i`` always gets
    the same seed (``seed + i``), so both schedules give a layer the same random weights.
    The copies are only valid until the next step.
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', not {mode!r}")
    work = copy.deepcopy(model).eval()
    modules = dict(work.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"the model has no layer(s) {missing}; take the names from randomizable_layers()")
    index = {name: i for i, name in enumerate(layers)}
    for step, name in enumerate(reversed(list(layers))):
        module = modules[name]
        saved = {k: v.detach().clone() for k, v in module.named_parameters(recurse=False)}
        _reinitialise(module, seed + index[name])
        yield step, name, work
        if mode == "independent":
            with torch.no_grad():
                for k, p in module.named_parameters(recurse=False):
                    p.copy_(saved[k])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], values.size]
    run = np.repeat(np.arange(starts.size), ends - starts)
    average = (starts + ends - 1) / 2 + 1
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = average[run]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ: the Pearson correlation of the (tie-averaged) ranks; NaN if either is constant."""
    x, y = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs equal sizes, got {x.shape} and {y.shape}")
    rx, ry = _ranks(x) - (x.size + 1) / 2, _ranks(y) - (y.size + 1) / 2
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def _minmax(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    low, high = m.min(), m.max()
    return (m - low) / (high - low) if high > low else np.zeros_like(m)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Mean structural similarity (Wang et al., 2004) with Gaussian weights, data range 1.

    Local means, variances and covariance use a Gaussian window (σ = ``sigma``, truncated at
    3.5 σ, reflect borders) with population (not sample) moments; ``C1 = 0.01²``,
    ``C2 = 0.03²``; the mean leaves out a border of half the window width.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two H×W maps of equal size, got {x.shape} and {y.shape}")
    truncate = 3.5
    half = int(truncate * sigma + 0.5)
    if min(x.shape) < 2 * half + 1:
        raise ValueError(f"maps of {x.shape} are smaller than the {2 * half + 1}-px SSIM window")

    def blur(z: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(z, sigma=sigma, truncate=truncate, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[half:-half, half:-half].mean())


def hog_similarity(a: np.ndarray, b: np.ndarray, *, cell: int = 16, orientations: int = 9, block: int = 2) -> float:
    """Spearman correlation of the HOG descriptors of two (min–max normalised) maps."""
    kwargs = dict(orientations=orientations, pixels_per_cell=(cell, cell), cells_per_block=(block, block), feature_vector=True)
    return spearman(hog(np.asarray(a, dtype=np.float64), **kwargs), hog(np.asarray(b, dtype=np.float64), **kwargs))


def similarities(original: np.ndarray, randomized: np.ndarray, protocol: SanityProtocol) -> dict[str, float]:
    """The four similarity scores between two ``H×W`` maps."""
    o, r = np.asarray(original, dtype=np.float64), np.asarray(randomized, dtype=np.float64)
    if o.shape != r.shape or o.ndim != 2:
        raise ValueError(f"maps must be H×W of equal size, got {o.shape} and {r.shape}")
    on, rn = _minmax(o), _minmax(r)
    return {
        "spearman_abs": spearman(np.abs(o), np.abs(r)),
        "spearman": spearman(o, r),
        "ssim": ssim(on, rn, protocol.ssim_sigma),
        "hog": hog_similarity(on, rn, cell=protocol.hog_cell, orientations=protocol.hog_orientations, block=protocol.hog_block),
    }


@dataclass(frozen=True)
class SanityRecord:
    """Similarities of one image's map at one randomisation step."""

    image: int            # position of the image in the batch the caller passed
    mode: str
    step: int             # 0 = first randomised layer (the output layer)
    layer: str
    spearman_abs: float
    spearman: float
    ssim: float
    hog: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SanityRecord":
        nan = float("nan")
        return cls(
            int(data["image"]), str(data["mode"]), int(data["step"]), str(data["layer"]),
            *(nan if data[k] is None else float(data[k]) for k in ("spearman_abs", "spearman", "ssim", "hog")),
        )


def _maps(explainer: Explainer, model: nn.Module, batch: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    maps = explainer(model, batch, targets)
    maps = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or maps.shape[0] != batch.shape[0]:
        raise ValueError(f"the explainer must return B×H×W maps, got shape {maps.shape} for a batch of {batch.shape[0]}")
    return maps.astype(np.float64)


def sanity_records(
    model: nn.Module,
    batch: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    explainer: Explainer,
    *,
    protocol: SanityProtocol,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    on_step: Callable[[str, int, int], None] | None = None,
) -> tuple[np.ndarray, list[SanityRecord], dict[str, list[np.ndarray]]]:
    """Run every schedule of the protocol on one batch of images.

    Args:
        model: the trained classifier (left unchanged; a deep copy is randomised).
        batch: normalised ``B×3×H×W`` images.
        targets: the ``B`` classes to explain (kept fixed across steps).
        explainer: ``(model, batch, targets) → B×h×w`` maps (tensor or array).
        layers: input-to-output layer names; default :func:`randomizable_layers`.
        on_step: called as ``on_step(mode, step, total_steps)`` after each step (progress).

    Returns:
        ``(original maps B×h×w, records, maps)`` where ``maps[mode]`` lists the randomised
        maps of every step (for the grid of maps the UI shows).
    """
    if not isinstance(protocol, SanityProtocol):
        raise TypeError(f"sanity_records needs a SanityProtocol, got {type(protocol).__name__}")
    targets = torch.as_tensor(targets, dtype=torch.long, device=batch.device)
    if targets.shape != (batch.shape[0],):
        raise ValueError(f"need one target per image: batch of {batch.shape[0]}, targets of shape {tuple(targets.shape)}")
    was_training = model.training
    if layers is None:
        layers = randomizable_layers(model, batch[:1])
    original = _maps(explainer, model, batch, targets)
    model.train(was_training)
    records: list[SanityRecord] = []
    all_maps: dict[str, list[np.ndarray]] = {}
    for mode in protocol.modes:
        all_maps[mode] = []
        for step, layer, randomized in randomization_steps(model, mode, layers, seed=seed):
            maps = _maps(explainer, randomized, batch, targets)
            all_maps[mode].append(maps)
            for i in range(batch.shape[0]):
                scores = similarities(original[i], maps[i], protocol)
                records.append(SanityRecord(i, mode, step, layer, **scores))
            if on_step is not None:
                on_step(mode, step, len(layers))
    return original, records, all_maps


def aggregate_sanity(records: Iterable[SanityRecord | Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Mean ± std over images of each similarity, per mode and step (NaNs skipped and counted).

    ``{mode: [{"step", "layer", "n", "<metric>": {"mean", "std", "nan"}, …}, …]}``.
    """
    recs = [r if isinstance(r, SanityRecord) else SanityRecord.from_dict(r) for r in records]
    out: dict[str, list[dict[str, Any]]] = {}
    for mode in sorted({r.mode for r in recs}):
        rows = []
        subset = [r for r in recs if r.mode == mode]
        for step in sorted({r.step for r in subset}):
            at = [r for r in subset if r.step == step]
            row: dict[str, Any] = {"step": step, "layer": at[0].layer, "n": len(at)}
            for metric in ("spearman_abs", "spearman", "ssim", "hog"):
                values = np.array([getattr(r, metric) for r in at], dtype=np.float64)
                finite = values[~np.isnan(values)]
                row[metric] = {
                    "mean": float(finite.mean()) if finite.size else None,
                    "std": float(finite.std()) if finite.size else None,
                    "nan": int(values.size - finite.size),
                }
            rows.append(row)
        out[mode] = rows
    return out


@register_metric("sanity")
class SanityFamily(MetricFamily):
    """Model-parameter randomisation (Adebayo et al., NeurIPS 2018): :func:`sanity_records`."""

    label = "Sanity checks"
    protocol_class = SanityProtocol

    def cost(self, protocol, *, model_layers=0):
        layers = max(1, model_layers // 3)
        return Cost(explainer_runs=1 + layers * len(protocol.modes))

    def columns(self, protocol):
        cols = []
        for mode in protocol.modes:
            cols += [{"key": f"{mode}.spearman_abs", "label": f"Spearman |map| ({mode})", "better": "lower"},
                     {"key": f"{mode}.ssim", "label": f"SSIM ({mode})", "better": "lower"},
                     {"key": f"{mode}.hog", "label": f"HOG ({mode})", "better": "lower"}]
        return cols

    def plots(self, protocol):
        return [{"kind": "line", "title": f"Spearman |map| vs randomised layers ({mode})",
                 "x_label": "layers randomised (output first)", "y_label": "similarity", "y_min": -0.2, "y_max": 1,
                 "series": [{"x": f"steps.{mode}.*.step", "y": f"steps.{mode}.*.spearman_abs.mean", "dashed": False}]}
                for mode in ("cascading", "independent")]

    def run(self, protocol, ctx):
        sal, cls = ctx.explained_map(protocol)
        x = ctx.inputs(protocol.preprocessing)[1]
        _, recs, _ = sanity_records(ctx.model, x, torch.tensor([cls]), ctx.explainer(), protocol=protocol, seed=ctx.seed)
        return [{"class_id": cls, "variant": "", "data": {"steps": [r.to_dict() for r in recs]}, "saliency": sal}]

    def aggregate(self, protocol, records, *, class_names=None):
        # a stored record holds one image's steps; SanityRecord objects are single steps
        flat = []
        for r in records:
            flat.extend(r["steps"] if isinstance(r, Mapping) and "steps" in r else [r])
        return aggregate_sanity(flat)

    def summarise(self, protocol, records, class_names=None):
        steps = [step for r in records for step in r.get("steps", [])]
        agg = aggregate_sanity(steps)
        values = {}
        for mode in protocol.modes:
            rows = agg.get(mode, [])
            for key in ("spearman_abs", "ssim", "hog"):
                means = [row[key]["mean"] for row in rows if row[key]["mean"] is not None]
                values[f"{mode}.{key}"] = float(np.mean(means)) if means else None
        return values, {"steps": agg}
