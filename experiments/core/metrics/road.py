"""ROAD: RemOve And Debias (Rong, Leemann, Nguyen, Fiedler, Haghighi, Kasneci and Kasneci,
"A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022).

Removing pixels by setting them to a constant leaks the removal mask's shape to the model
(the "class information leakage" the paper measures), so ROAD replaces removed pixels by a
*noisy linear imputation* that depends only on the kept neighbourhood:

* every removed pixel ``i`` takes the weighted mean of its 8 neighbours inside the image,
  direct neighbours weighted 1/6 and diagonal ones 1/12, where a neighbour is either a kept
  pixel (its value) or another removed pixel (its own unknown). Per channel ``c`` that is the
  sparse linear system

      (Σ_{j∈N(i)} w_ij) · v_i − Σ_{j∈N(i), j removed} w_ij · v_j = Σ_{j∈N(i), j kept} w_ij · x_j,

  one equation per removed pixel, solved to float64 precision (:func:`solve_imputation`:
  sparse LU, or algebraic multigrid for large systems); the matrix is symmetric and, as long
  as one pixel is kept, non-singular;
* then Gaussian noise of standard deviation ``noise`` (0.01) is added to every imputed value.

The imputation runs in pixel space ``[0, 1]`` before normalisation, as the authors' reference
code does (its ``transform_test`` normalises after imputing); since the weights of each
equation sum to its diagonal, imputing before or after the per-channel normalisation gives
the same values, only the noise's scale differs.

For each fraction ``p`` (the authors' no-retraining set ``0.1 … 0.5, 0.7, 0.9``), MoRF removes
the ``⌊p·H·W⌋`` most relevant pixels (all channels), LeRF the ``⌊p·H·W⌋`` least relevant
(stable orders; ties keep raster order). The imputed images are classified and the metric is
top-1 accuracy against the ground-truth label at each ``p`` (``reference="label"``, as the
paper), or against the clean top-1 prediction (``reference="prediction"``, for data sets
without labels). The softmax probability of the explained class is kept as well (the
reference code reports both). Scores ×100: MoRF = mean accuracy over the fractions (lower is
better: removing what the map calls important should hurt), LeRF the same for the least
relevant pixels (higher is better), overall = LeRF − MoRF.

Differences from the reference code, on purpose: its LeRF at ``p`` removes all pixels *after*
the top ``p`` (``1 − p`` of the image), we remove ``p`` of the least relevant so both curves
share the x-axis "fraction removed"; it breaks ties with 1e-4 noise, we with a stable sort.
Quantus 0.6.0's ``ROAD`` ranks the map broadcast over ``C·H·W`` values and hands those flat
indices to an imputer that indexes ``H·W`` pixels, so on colour images it removes other
pixels than the paper's (tested); on one-channel images it agrees with us.

Every noise draw comes from a generator seeded with ``seed · 1 000 003 + image index``, in
the order MoRF fractions, then LeRF fractions. All ``2·len(fractions) + 1`` images of one
image (the clean one first) go through the model in chunks of ``batch_size``.

Shapes: ``pixels`` ``C×H×W`` in ``[0, 1]``, ``saliency`` ``H×W``, ``removed`` ``H×W`` bool.

Example::

    rec = road_record(model, pixels, saliency, explained=281, label=281,
                      protocol=get_protocol("road-v1"), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    rec.morf_correct, rec.lerf_correct
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from ..imageops import as_map, normalize
from ..protocols import RoadProtocol
from .base import Cost, MetricFamily, model_device
from .causal import pixel_order
from .perturbation import removed_counts
from .registry import register_metric

__all__ = ["NEIGHBOUR_WEIGHTS", "imputation_seconds", "imputation_system", "noisy_linear_imputation", "removal_masks",
           "solve_imputation", "RoadRecord", "road_record", "aggregate_road"]

logger = logging.getLogger(__name__)

#: ``((row offset, column offset), weight)``: direct neighbours 1/6, diagonal ones 1/12 (sum 1).
NEIGHBOUR_WEIGHTS: tuple[tuple[tuple[int, int], float], ...] = (
    ((-1, -1), 1 / 12), ((-1, 0), 1 / 6), ((-1, 1), 1 / 12),
    ((0, -1), 1 / 6), ((0, 1), 1 / 6),
    ((1, -1), 1 / 12), ((1, 0), 1 / 6), ((1, 1), 1 / 12),
)


def imputation_system(pixels: np.ndarray, removed: np.ndarray) -> tuple[scipy.sparse.csc_matrix, np.ndarray, np.ndarray]:
    """``(A, b, idx)``: the ``n×n`` matrix, the ``n×C`` right-hand sides and the ``n`` flat pixel
    indices of the removed pixels, so that ``A v = b`` holds the imputed values ``v`` (``n×C``)."""
    channels, height, width = pixels.shape
    idx = np.flatnonzero(removed.reshape(-1))
    n = idx.size
    var = np.full(height * width, -1, dtype=np.int64)
    var[idx] = np.arange(n)
    rows, cols = np.divmod(idx, width)
    flat = pixels.reshape(channels, -1)
    diagonal = np.zeros(n)
    b = np.zeros((n, channels))
    a_rows, a_cols, a_vals = [np.arange(n)], [np.arange(n)], []
    for (dr, dc), weight in NEIGHBOUR_WEIGHTS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        eq = np.flatnonzero(inside)
        neighbour = r[inside] * width + c[inside]
        diagonal[eq] += weight
        unknown = var[neighbour] >= 0
        a_rows.append(eq[unknown])
        a_cols.append(var[neighbour[unknown]])
        a_vals.append(np.full(int(unknown.sum()), -weight))
        # each equation meets each offset once, so plain fancy-index addition is safe
        b[eq[~unknown]] += weight * flat[:, neighbour[~unknown]].T
    values = np.concatenate([diagonal, *a_vals])
    matrix = scipy.sparse.csc_matrix((values, (np.concatenate(a_rows), np.concatenate(a_cols))), shape=(n, n))
    return matrix, b, idx


#: Unknowns above which the imputation is solved by algebraic multigrid instead of LU.
MULTIGRID_ABOVE = 8192
#: Relative residual the multigrid solve reaches (values then agree with LU's to ~1e-11).
MULTIGRID_TOLERANCE = 1e-12


def solve_imputation(matrix: scipy.sparse.csc_matrix, b: np.ndarray) -> np.ndarray:
    """``A⁻¹ b`` for the imputation system (``n×n``, ``n×C`` right-hand sides), float64.

    The matrix is a symmetric M-matrix, a weighted graph Laplacian of the removed pixels plus
    the weights to kept ones. Small systems: sparse LU in raster order (the matrix is banded,
    bandwidth ≤ W + 1, so the fill is bounded; SuperLU's minimum-degree orderings took minutes
    on scattered masks). Large ones: LU's work grows as ``n · W²`` (3.6–4 s for 90 % of
    224×224 on one core), so classical (Ruge–Stüben) algebraic multigrid as the preconditioner
    of conjugate gradients solves them instead, 0.4–0.55 s, to a relative residual of
    :data:`MULTIGRID_TOLERANCE`; a solve that does not get there falls back to LU.
    """
    n = matrix.shape[0]
    if n > MULTIGRID_ABOVE:
        import pyamg   # only a ROAD run needs it

        hierarchy = pyamg.ruge_stuben_solver(matrix.tocsr())
        columns = []
        for c in range(b.shape[1]):
            column, info = hierarchy.solve(b[:, c], tol=MULTIGRID_TOLERANCE, accel="cg", maxiter=200, return_info=True)
            if info != 0:      # not converged (or broke down): LU below
                logger.warning("ROAD imputation: multigrid did not converge (%s) on %d unknowns; solving by LU", info, n)
                break
            columns.append(column)
        else:
            return np.column_stack(columns)
    return scipy.sparse.linalg.splu(matrix, permc_spec="NATURAL").solve(b)


def noisy_linear_imputation(pixels: np.ndarray | torch.Tensor, removed: np.ndarray | torch.Tensor, *,
                            noise: float = 0.01, rng: np.random.Generator | None = None) -> np.ndarray:
    """``pixels`` (``C×H×W``) with the ``removed`` pixels (``H×W`` bool) imputed; float64.

    ``noise`` > 0 needs ``rng``; the draws are ``noise · rng.standard_normal((C, n))`` over the
    removed pixels in raster order.
    """
    x = np.array(pixels.detach().cpu() if isinstance(pixels, torch.Tensor) else pixels, dtype=np.float64)
    mask = np.asarray(removed.detach().cpu() if isinstance(removed, torch.Tensor) else removed, dtype=bool)
    if x.ndim != 3 or mask.shape != x.shape[1:]:
        raise ValueError(f"noisy_linear_imputation needs C×H×W pixels and an H×W mask, got {x.shape} and {mask.shape}")
    if not mask.any():
        return x
    if mask.all():
        raise ValueError("noisy linear imputation needs at least one kept pixel; remove a fraction below 1")
    if noise > 0 and rng is None:
        raise ValueError("noisy_linear_imputation with noise > 0 needs a seeded rng (numpy.random.Generator)")
    matrix, b, idx = imputation_system(x, mask)
    solution = solve_imputation(matrix, b)                                           # n×C
    flat = x.reshape(x.shape[0], -1)
    flat[:, idx] = solution.T
    if noise > 0:
        flat[:, idx] += noise * rng.standard_normal((x.shape[0], idx.size))
    return x


@dataclass(frozen=True)
class RoadRecord:
    """One (image, method, class): predictions and explained-class probabilities after each removal."""

    explained: int
    reference: int
    clean: int
    fractions: tuple[float, ...]
    morf: tuple[int, ...]
    lerf: tuple[int, ...]
    morf_probability: tuple[float, ...]
    lerf_probability: tuple[float, ...]

    @property
    def morf_correct(self) -> tuple[bool, ...]:
        return tuple(p == self.reference for p in self.morf)

    @property
    def lerf_correct(self) -> tuple[bool, ...]:
        return tuple(p == self.reference for p in self.lerf)

    def to_dict(self) -> dict[str, Any]:
        return {"explained": self.explained, "reference": self.reference, "clean": self.clean,
                "fractions": list(self.fractions), "morf": list(self.morf), "lerf": list(self.lerf),
                "morf_probability": list(self.morf_probability), "lerf_probability": list(self.lerf_probability)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoadRecord":
        return cls(int(data["explained"]), int(data["reference"]), int(data["clean"]),
                   tuple(map(float, data["fractions"])), tuple(map(int, data["morf"])), tuple(map(int, data["lerf"])),
                   tuple(map(float, data["morf_probability"])), tuple(map(float, data["lerf_probability"])))


def removal_masks(saliency, protocol: RoadProtocol) -> list[np.ndarray]:
    """The ``H×W`` bool masks of the pixels ROAD imputes, in the order of the noise draws: MoRF
    at each of ``protocol.fractions``, then LeRF at each."""
    sal = as_map(saliency)
    height, width = sal.shape
    n = height * width
    counts = removed_counts(protocol.fractions, n)
    masks = []
    for order in (pixel_order(sal), torch.sort(sal.reshape(-1), stable=True).indices):
        rank = torch.empty(n, dtype=torch.long)
        rank[order] = torch.arange(n)
        rank = rank.view(height, width).numpy()
        masks += [rank < count for count in counts]
    return masks


@torch.no_grad()
def road_record(model, pixels: torch.Tensor, saliency, *, explained: int, label: int | None, protocol: RoadProtocol,
                mean: Sequence[float], std: Sequence[float], seed: int = 0, index: int = 0, batch_size: int = 64,
                device: torch.device | str | None = None) -> RoadRecord:
    """MoRF and LeRF of one image under ``protocol``; see the module docstring.

    ``label`` is the ground truth (needed when ``protocol.reference == "label"``); with
    ``"prediction"`` the clean top-1 class is the reference.
    """
    if not isinstance(protocol, RoadProtocol):
        raise TypeError(f"road_record needs a RoadProtocol, got {type(protocol).__name__}")
    if pixels.dim() != 3:
        raise ValueError(f"pixels must be C×H×W in [0, 1], got shape {tuple(pixels.shape)}")
    sal = as_map(saliency)
    height, width = pixels.shape[1:]
    if tuple(sal.shape) != (height, width):
        raise ValueError(f"saliency map is {tuple(sal.shape)} but the image is {height}×{width}; resize the map first")
    if protocol.reference == "label" and label is None:
        raise ValueError("ROAD with reference='label' needs the image's ground-truth label")
    rng = np.random.default_rng(seed * 1_000_003 + index)
    source = pixels.detach().cpu().double().numpy()
    masks = removal_masks(sal, protocol)
    images = [source] + [noisy_linear_imputation(source, mask, noise=protocol.noise, rng=rng) for mask in masks]
    dev = model_device(model, device)
    batch = torch.from_numpy(np.stack(images)).float()
    predictions, probabilities = [], []
    for chunk in batch.split(batch_size):
        logits = model(normalize(chunk.to(dev), mean, std))
        if logits.dim() != 2 or logits.shape[0] != chunk.shape[0]:
            raise ValueError(f"the model must return B×C logits, got shape {tuple(logits.shape)}")
        if not 0 <= explained < logits.shape[1]:
            raise ValueError(f"class {explained} is outside the model's {logits.shape[1]} classes")
        predictions += [int(i) for i in logits.argmax(dim=1).cpu()]
        probabilities += [float(p) for p in torch.softmax(logits.double(), dim=1)[:, explained].cpu()]
    k = len(protocol.fractions)
    clean = predictions[0]
    return RoadRecord(
        explained=int(explained), reference=int(label) if protocol.reference == "label" else clean, clean=clean,
        fractions=tuple(float(f) for f in protocol.fractions),
        morf=tuple(predictions[1:1 + k]), lerf=tuple(predictions[1 + k:]),
        morf_probability=tuple(probabilities[1:1 + k]), lerf_probability=tuple(probabilities[1 + k:]),
    )


def aggregate_road(records: Iterable[RoadRecord | Mapping[str, Any]], protocol: RoadProtocol) -> dict[str, Any]:
    """Accuracy and mean-probability curves over the records, and the scores ×100.

    ``{"n", "fractions", "morf_accuracy", "lerf_accuracy", "morf_probability",
    "lerf_probability", "clean_accuracy", "morf", "lerf", "overall"}``; scores ``None``
    without records.
    """
    recs = [r if isinstance(r, RoadRecord) else RoadRecord.from_dict(r) for r in records]
    fractions = tuple(float(f) for f in protocol.fractions)
    out: dict[str, Any] = {"n": len(recs), "fractions": list(fractions)}
    if not recs:
        return {**out, **dict.fromkeys(("morf_accuracy", "lerf_accuracy", "morf_probability", "lerf_probability",
                                        "clean_accuracy", "morf", "lerf", "overall"))}
    for r in recs:
        if r.fractions != fractions:
            raise ValueError(f"a record has fractions {r.fractions}, the protocol {fractions}; aggregate one protocol at a time")
    morf = np.mean([r.morf_correct for r in recs], axis=0)
    lerf = np.mean([r.lerf_correct for r in recs], axis=0)
    out.update(morf_accuracy=morf.tolist(), lerf_accuracy=lerf.tolist(),
               morf_probability=np.mean([r.morf_probability for r in recs], axis=0).tolist(),
               lerf_probability=np.mean([r.lerf_probability for r in recs], axis=0).tolist(),
               clean_accuracy=float(np.mean([r.clean == r.reference for r in recs])),
               morf=100 * float(morf.mean()), lerf=100 * float(lerf.mean()))
    out["overall"] = out["lerf"] - out["morf"]
    return out


#: One core's seconds per imputation at 224×224, averaged over road-v1's fractions (measured:
#: 3.5–3.6 s for the 14 imputations of one image, scattered and smooth maps, on a loaded 2-core
#: machine where LU took 12–20 s).
IMPUTATION_SECONDS_224 = 0.25


def imputation_seconds(protocol: RoadProtocol) -> float:
    """A prior for one image's imputations: multigrid's work grows with the unknowns, ``∝ S²``."""
    return 2 * len(protocol.fractions) * IMPUTATION_SECONDS_224 * (protocol.preprocessing.size / 224) ** 2


@register_metric("road")
class RoadFamily(MetricFamily):
    """ROAD, MoRF and LeRF with noisy linear imputation (Rong et al., ICML 2022): :func:`road_record`."""

    label = "ROAD (remove and debias)"
    protocol_class = RoadProtocol

    def needs(self, protocol):
        return {"labels"} if protocol.reference == "label" or protocol.explain == "target" else set()

    def cost(self, protocol, *, model_layers=0):
        return Cost(explainer_runs=1, model_passes=2 * len(protocol.fractions) + 1,
                    cpu_seconds=imputation_seconds(protocol))

    def columns(self, protocol):
        return [{"key": "morf", "label": "ROAD MoRF accuracy", "better": "lower"},
                {"key": "lerf", "label": "ROAD LeRF accuracy", "better": "higher"},
                {"key": "overall", "label": "ROAD LeRF − MoRF", "better": "higher"}]

    def plots(self, protocol):
        return [
            {"kind": "line", "title": "ROAD: accuracy vs fraction removed (imputed)", "x_label": "fraction removed",
             "y_label": "top-1 accuracy", "y_min": 0, "y_max": 1,
             "series": [{"x": "fractions", "y": "morf_accuracy", "suffix": " (MoRF)", "dashed": False},
                        {"x": "fractions", "y": "lerf_accuracy", "suffix": " (LeRF)", "dashed": True}]},
            {"kind": "line", "title": "ROAD: explained-class probability vs fraction removed", "x_label": "fraction removed",
             "y_label": "probability", "y_min": 0, "y_max": 1,
             "series": [{"x": "fractions", "y": "morf_probability", "suffix": " (MoRF)", "dashed": False},
                        {"x": "fractions", "y": "lerf_probability", "suffix": " (LeRF)", "dashed": True}]},
        ]

    def run(self, protocol, ctx):
        needs_label = protocol.reference == "label" or protocol.explain == "target"
        label = ctx.label() if needs_label else None
        [(sal, cls)] = ctx.maps(protocol.preprocessing, [label if protocol.explain == "target" else None])
        rec = road_record(ctx.model, ctx.pixels(protocol.preprocessing), sal, explained=cls, label=label,
                          protocol=protocol, mean=ctx.mean, std=ctx.std, seed=ctx.seed, index=ctx.index)
        return [{"class_id": cls, "variant": "", "data": rec.to_dict(), "saliency": sal}]

    def aggregate(self, protocol, records, *, class_names=None):
        return aggregate_road(list(records), protocol)

    def summarise(self, protocol, records, class_names=None):
        agg = aggregate_road(records, protocol)
        return ({k: agg[k] for k in ("morf", "lerf", "overall")},
                {k: agg[k] for k in ("fractions", "morf_accuracy", "lerf_accuracy", "morf_probability",
                                     "lerf_probability", "clean_accuracy")})

    def record_score(self, data):
        ref = data["reference"]
        return 100 * (sum(p == ref for p in data["lerf"]) - sum(p == ref for p in data["morf"])) / len(data["morf"])
