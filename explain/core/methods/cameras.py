"""CAMERAS (Jalwana, Akhtar, Bennamoun, Mian, CVPR 2021)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.methods.base import LAYER_PARAM, Method, Param, batch_size_param
from explain.core.methods.msgcam import multiscale_captures
from explain.core.ops import chunks, interp_matrix, norm, scaled_sizes
from explain.core.registry import register_method


@register_method("cameras")
class Cameras(Method):
    """CAMERAS: activations and gradients averaged over valid up-scaled inputs, multiplied pixel-wise.

    Input sizes ``ζ_t = S + step·(t−1)``, ``t = 1…N`` (default 8 scales of step 100:
    224, 324, …, 924; the shorter side of a non-square input), bicubic upsampling of the input. Scales whose top-1 class differs from
    the target are dropped (the input scale alone is kept if none remains). ``A_t`` and
    ``G_t = ∂F_c/∂A_t`` (raw logit) are resized to ``S×S`` and averaged separately into
    ``Ā``, ``Ḡ`` (``K×S×S``); map ``norm(ReLU(Σ_k Ā_k ⊙ Ḡ_k))`` (``B×S×S``), no spatial pooling.
    ``Ā`` and ``Ḡ`` are never built: see :func:`resized_channel_product`.
    Jalwana et al., CVPR 2021.

    Example::

        [e] = explain(classifier, x, "cameras", params={"scales": 4})
    """

    label: ClassVar[str] = "CAMERAS"
    families: ClassVar[frozenset[str]] = frozenset({"cnn"})
    group = "cam"
    resizes_inputs: ClassVar[bool] = True
    folds_batch_norms: ClassVar[bool] = True
    uses_gradients: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        LAYER_PARAM,
        Param("scales", "int", 8, minimum=1, maximum=16, help="Number N of input sizes."),
        Param("step", "int", 100, minimum=1, maximum=1024, help="Pixels added to the input size per scale."),
        Param("interpolation", "choice", "bicubic", choices=("bicubic", "bilinear"),
              help="How the input is resized to each scale."),
        Param("channel_chunk", "int", 2048, minimum=1, maximum=8192,
              help="Channels per matrix product of the channel sum (fewer only means more, smaller products)."),
        batch_size_param(what="images of the input size (fewer at larger scales)"),
    )

    def attribute(self, classifier, inputs, targets, params, generator=None) -> Tensor:
        plane = tuple(inputs.shape[-2:])
        sizes = scaled_sizes(plane, params["scales"], params["step"])
        acts, grads, valid = multiscale_captures(
            classifier, inputs, targets, params["layer"], sizes, params["interpolation"], params["batch_size"]
        )
        share = valid.float() / valid.float().sum(dim=1, keepdim=True)          # B×T
        out = resized_channel_product(acts, grads, share, plane, params["channel_chunk"])
        return norm(torch.relu(out))


def resized_channel_product(
    acts: list[Tensor], grads: list[Tensor], share: Tensor, plane: tuple[int, int], channel_chunk: int
) -> Tensor:
    """``Σ_k Ā_k ⊙ Ḡ_k`` (``B×H×W``) with ``Ā = Σ_t s_t·up(A_t)``, ``Ḡ = Σ_t s_t·up(G_t)``.

    Args:
        acts, grads: per scale ``t``, ``B×K×h_t×w_t``.
        share: ``B×T`` scale weights ``s_t`` (rows sum to 1).
        plane: the output size ``(H, W)``.
        channel_chunk: channels multiplied at a time (memory vs speed).

    Bilinear resizing is separable, ``up(X) = R X Cᵀ`` (``R``: ``H×h``, ``C``: ``W×w``, see
    :func:`explain.core.ops.interp_matrix`), so the channel sums can run on the feature maps' own
    grid and no ``K×H×W`` tensor is ever built. Two ways of arranging those sums, equal to
    rounding: on the CPU the fewest multiply-adds (:func:`product_by_column_windows`, about a
    thousand small products per image); on an accelerator a few large batched products
    (:func:`product_by_column_grams`), because there each small product costs a kernel launch
    (measured on an H100 with 32 images: the column windows made ResNet18's CAMERAS 10.9× its
    floor, the Gram matrices 0.73×).
    """
    product = product_by_column_windows if acts[0].device.type == "cpu" else product_by_column_grams
    return product(acts, grads, share, plane, channel_chunk)


def product_by_column_grams(
    acts: list[Tensor], grads: list[Tensor], share: Tensor, plane: tuple[int, int], channel_chunk: int
) -> Tensor:
    """:func:`resized_channel_product` as one Gram matrix per output column.

    Stacking the scales' rows, ``Ā_k = R P_k`` with ``R = [R_1 … R_T]`` (``H×Σh_t``) and
    ``P_k = [s_1 A_1,k C_1ᵀ; …; s_T A_T,k C_Tᵀ]`` (``Σh_t×W``), and the same for ``Ḡ_k = R Q_k``.
    Then, for every output column ``x``::

        Σ_k Ā_k[y, x] Ḡ_k[y, x] = r_yᵀ (Σ_k P_k[:, x] Q_k[:, x]ᵀ) r_y = r_yᵀ M_x r_y

    ``M_x`` (``Σh_t×Σh_t``) sums over the channels once, in one batched product of ``W``
    ``(Σh_t×c)·(c×Σh_t)`` matrices per chunk of ``c`` channels: ``K·W·(Σh_t)²`` multiply-adds.
    Images are handled one at a time to bound the memory.
    """
    device, dtype = acts[0].device, acts[0].dtype
    height, width = plane
    rows = torch.cat([interp_matrix(a.shape[-2], height, device=device, dtype=dtype) for a in acts], dim=1)  # H×Σh
    cols = [interp_matrix(a.shape[-1], width, device=device, dtype=dtype) for a in acts]                     # W×w_t
    b, k = acts[0].shape[:2]
    out = torch.zeros(b, height, width, device=device, dtype=dtype)

    def stacked(maps: list[Tensor], weighted_cols: list[Tensor], i: int, sl: slice) -> Tensor:
        # P[x, (t, r), k] = s_t Σ_j C_t[x, j] X_t,k[r, j], laid out W×Σh×c for the products below;
        # only the small c×h×w maps are transposed, never the W-wide results
        parts = []
        for x, c in zip(maps, weighted_cols):
            h, w = x.shape[-2:]
            small = x[i, sl].permute(2, 1, 0).reshape(w, -1)                                # w×(h·c)
            parts.append((c @ small).view(width, h, -1))
        return torch.cat(parts, dim=1)

    for i in range(b):
        weighted = [share[i, t] * c for t, c in enumerate(cols)]
        gram = torch.zeros(width, rows.shape[1], rows.shape[1], device=device, dtype=dtype)   # W×Σh×Σh
        for sl in chunks(k, channel_chunk):
            gram += stacked(acts, weighted, i, sl) @ stacked(grads, weighted, i, sl).transpose(1, 2)
        # out[y, x] = Σ_ab R[y, a] M_x[a, b] R[y, b]
        out[i] = ((gram @ rows.t()) * rows.t()[None]).sum(dim=1).t()
    return out


def product_by_column_windows(
    acts: list[Tensor], grads: list[Tensor], share: Tensor, plane: tuple[int, int], channel_chunk: int
) -> Tensor:
    """:func:`resized_channel_product` with the fewest multiply-adds.

    Every row of ``R`` and ``C`` has two non-zero taps. Expanding both averages::

        Σ_k Ā_k[y, x] Ḡ_k[y, x] = Σ_{s,t} s_s s_t Σ_{r,q,j,l} R_s[y, r] R_t[y, q] C_s[x, j] C_t[x, l] N^{st}[r, j, q, l],
        N^{st}[r, j, q, l] = Σ_k A_s,k[r, j] G_t,k[q, l]

    so the channel sums run on the feature maps' own grid. Only the column pairs ``(j, l)`` that
    meet in some output column are needed: for each column ``j`` of scale ``s`` a window of
    ``n`` adjacent columns ``l`` of scale ``t``, which is one ``h_s×K`` by ``K×(n·h_t)`` product on
    contiguous slices (no gathers): ``K·n·Σ_{s,t} w_s h_s h_t`` multiply-adds, 2.25 G for
    EfficientNet-Lite0's 1280 channels at 8 scales against 5.8 G when every row pair of the
    column-resized maps was multiplied (2.0× faster on 2 cores; ResNet18 1.7×, VGG19 1.8×). The row taps then take four gathers of the small
    ``N`` per output row, and the column taps one ``H×(w_s·n)`` by ``(w_s·n)×W`` product.
    No ``K×H×W`` tensor exists.
    """
    device, dtype = acts[0].device, acts[0].dtype
    b, k = acts[0].shape[:2]
    height, width = plane
    rows = [_two_taps(interp_matrix(a.shape[-2], height, device=device, dtype=dtype)) for a in acts]
    cols = [interp_matrix(a.shape[-1], width, device=device, dtype=dtype) for a in acts]     # W×w_t
    windows = {(s, t): _column_windows(cs, ct) for s, cs in enumerate(cols) for t, ct in enumerate(cols)}
    out = torch.zeros(b, height, width, device=device, dtype=dtype)
    for i in range(b):
        # w×K×h and K×w×h copies of the small maps: column j of A and a window of columns of G
        # are then contiguous slices
        a_cols = [a[i].permute(2, 0, 1).contiguous() for a in acts]
        g_cols = [g[i].permute(0, 2, 1).contiguous() for g in grads]
        for (s, t), (starts, span, pair_weights) in windows.items():
            weight = share[i, s] * share[i, t]
            if weight == 0:                      # a dropped scale
                continue
            h_s, h_t = a_cols[s].shape[-1], g_cols[t].shape[-1]
            blocks = torch.zeros(len(starts), h_s, span * h_t, device=device, dtype=dtype)     # N[j]: h_s×(n·h_t)
            for sl in chunks(k, channel_chunk):
                for j, l0 in enumerate(starts):
                    blocks[j].addmm_(a_cols[s][j, sl].t(), g_cols[t][sl, l0:l0 + span].reshape(sl.stop - sl.start, -1))
            blocks = blocks.view(len(starts), h_s, span, h_t)
            # Σ_{r,q} R_s[y, r] R_t[y, q] N[j, r, m, q] over the two taps of each: H×w_s×n (the
            # gathered row index comes first)
            by_row = sum((w_r * w_q)[:, None, None] * blocks[:, r, :, q]
                         for r, w_r in rows[s] for q, w_q in rows[t])
            out[i].addmm_(by_row.reshape(height, -1), pair_weights.t(), alpha=float(weight))
    return out


def _two_taps(resize: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The two source indices of each output row of a bilinear resizing matrix (``H×h``) with
    their weights, ``((index, weight), (index, weight))`` of ``H`` entries each; a row with one
    tap gets a second of weight 0."""
    top = resize.topk(2, dim=1)
    first, second = top.indices.min(dim=1).values, top.indices.max(dim=1).values
    rows = torch.arange(resize.shape[0], device=resize.device)
    return (first, resize[rows, first]), (second, torch.where(second != first, resize[rows, second], 0.0))


def _column_windows(cols_s: Tensor, cols_t: Tensor) -> tuple[list[int], int, Tensor]:
    """For each column ``j`` of scale ``s`` the first column of the window of scale ``t``'s
    columns it meets in some output column, the window's width ``n``, and the weights
    ``C_s[x, j] C_t[x, l0_j + m]`` laid out ``W×(w_s·n)``."""
    meets = (cols_s != 0).to(cols_s.dtype).t() @ (cols_t != 0).to(cols_t.dtype)             # w_s×w_t
    w_t = cols_t.shape[1]
    # a column that no output column reads (a map larger than the output) meets nothing: any
    # window will do, its weights are 0
    hits = [row.nonzero().flatten().tolist() or [0] for row in meets]
    first, last = [h[0] for h in hits], [h[-1] for h in hits]
    span = max(b - a + 1 for a, b in zip(first, last))
    starts = [min(a, w_t - span) for a in first]
    index = torch.tensor(starts, device=cols_t.device)[:, None] + torch.arange(span, device=cols_t.device)
    pair_weights = cols_s[:, :, None] * cols_t[:, index]                                        # W×w_s×n
    return starts, span, pair_weights.reshape(cols_s.shape[0], -1)
