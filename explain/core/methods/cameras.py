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
    folds_batch_norms: ClassVar[bool] = True
    uses_gradients: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        LAYER_PARAM,
        Param("scales", "int", 8, minimum=1, maximum=16, help="Number N of input sizes."),
        Param("step", "int", 100, minimum=1, maximum=1024, help="Pixels added to the input size per scale."),
        Param("interpolation", "choice", "bicubic", choices=("bicubic", "bilinear"),
              help="How the input is resized to each scale."),
        Param("channel_chunk", "int", 128, minimum=1, maximum=8192,
              help="Channels resized to the input size at a time (memory vs speed)."),
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

    Bilinear resizing is separable, ``up(X) = R X Cᵀ`` (``R``: ``H×h``, ``C``: ``W×w``, see
    :func:`explain.core.ops.interp_matrix`). Stacking the scales' rows, ``Ā_k = R P_k`` with
    ``R = [R_1 … R_T]`` (``H×Σh_t``) and ``P_k = [s_1 A_1,k C_1ᵀ; …; s_T A_T,k C_Tᵀ]``
    (``Σh_t×W``), and the same for ``Ḡ_k = R Q_k``. Then, for every output column ``x``::

        Σ_k Ā_k[y, x] Ḡ_k[y, x] = r_yᵀ (Σ_k P_k[:, x] Q_k[:, x]ᵀ) r_y = r_yᵀ M_x r_y

    ``M_x`` (``Σh_t×Σh_t``) sums over the channels once: ``K·W·(Σh_t)²`` multiply-adds instead
    of the ``2·K·H·W·Σh_t`` of building ``Ā`` and ``Ḡ`` (3.2× fewer for EfficientNet-Lite0 at
    224 px, ``Σh_t = 140``; 1.6× for VGG19, ``Σh_t = 282``), and no ``K×H×W`` tensor exists.
    Images are handled one at a time and channels ``channel_chunk`` at a time to bound the memory.
    """
    device = acts[0].device
    rows = torch.cat([interp_matrix(a.shape[-2], plane[0], device=device) for a in acts], dim=1)  # H×Σh
    cols = [interp_matrix(a.shape[-1], plane[1], device=device) for a in acts]                   # W×w_t
    b, k = acts[0].shape[:2]
    out = torch.zeros(b, *plane, device=device)

    def stacked(maps: list[Tensor], weighted_cols: list[Tensor], i: int, sl: slice) -> Tensor:
        # P[x, (t, r), k] = s_t Σ_j C_t[x, j] X_t,k[r, j], laid out W×Σh×c for the products below;
        # only the small c×h×w maps are transposed, never the W-wide results
        parts = []
        for x, c in zip(maps, weighted_cols):
            h, w = x.shape[-2:]
            small = x[i, sl].permute(2, 1, 0).reshape(w, -1)                                # w×(h·c)
            parts.append((c @ small).view(plane[1], h, -1))
        return torch.cat(parts, dim=1)

    for i in range(b):
        weighted = [share[i, t] * c for t, c in enumerate(cols)]
        gram = torch.zeros(plane[1], rows.shape[1], rows.shape[1], device=device)          # W×Σh×Σh
        for sl in chunks(k, channel_chunk):
            # one (Σh×c)·(c×Σh) product per output column
            gram += stacked(acts, weighted, i, sl) @ stacked(grads, weighted, i, sl).transpose(1, 2)
        # out[y, x] = Σ_ab R[y, a] M_x[a, b] R[y, b]
        out[i] = ((gram @ rows.t()) * rows.t()[None]).sum(dim=1).t()
    return out
