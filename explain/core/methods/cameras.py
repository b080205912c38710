"""CAMERAS (Jalwana, Akhtar, Bennamoun, Mian, CVPR 2021)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.methods.base import LAYER_PARAM, Method, Param, batch_size_param
from explain.core.methods.msgcam import multiscale_captures
from explain.core.ops import chunks, interp_matrix, norm
from explain.core.registry import register_method


@register_method("cameras")
class Cameras(Method):
    """CAMERAS: activations and gradients averaged over valid up-scaled inputs, multiplied pixel-wise.

    Input sizes ``ζ_t = S + step·(t−1)``, ``t = 1…N`` (default 8 scales of step 100:
    224, 324, …, 924), bicubic upsampling of the input. Scales whose top-1 class differs from
    the target are dropped (the input scale alone is kept if none remains). ``A_t`` and
    ``G_t = ∂F_c/∂A_t`` (raw logit) are resized to ``S×S`` and averaged separately into
    ``Ā``, ``Ḡ`` (``K×S×S``); map ``norm(ReLU(Σ_k Ā_k ⊙ Ḡ_k))`` (``B×S×S``), no spatial pooling.
    The resize-and-average runs as two matrix products per channel chunk (``channel_chunk``
    channels at a time bound the memory).
    Jalwana et al., CVPR 2021.

    Example::

        [e] = explain(classifier, x, "cameras", params={"scales": 4})
    """

    label: ClassVar[str] = "CAMERAS"
    families: ClassVar[frozenset[str]] = frozenset({"cnn"})
    uses_gradients: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        LAYER_PARAM,
        Param("scales", "int", 8, minimum=1, maximum=16, help="Number N of input sizes."),
        Param("step", "int", 100, minimum=1, maximum=1024, help="Pixels added to the input size per scale."),
        Param("interpolation", "choice", "bicubic", choices=("bicubic", "bilinear"),
              help="How the input is resized to each scale."),
        Param("channel_chunk", "int", 128, minimum=1, maximum=8192,
              help="Channels resized to the input size at a time (memory vs speed)."),
        batch_size_param(16, "images of the input size (fewer at larger scales)"),
    )

    def attribute(self, classifier, inputs, targets, params, generator=None) -> Tensor:
        size = int(inputs.shape[-1])
        plane = tuple(inputs.shape[-2:])
        sizes = [size + params["step"] * t for t in range(params["scales"])]
        acts, grads, valid = multiscale_captures(
            classifier, inputs, targets, params["layer"], sizes, params["interpolation"], params["batch_size"]
        )
        share = valid.float() / valid.float().sum(dim=1, keepdim=True)          # B×T
        k = acts[0].shape[1]
        out = torch.zeros(inputs.shape[0], *plane, device=inputs.device)
        rows, cols_a, cols_g = self._separable(acts, grads, share, plane)
        for sl in chunks(k, params["channel_chunk"]):
            a_bar = rows @ torch.cat([a[:, sl] @ c for a, c in zip(acts, cols_a)], dim=2)     # B×c×S×S
            g_bar = rows @ torch.cat([g[:, sl] @ c for g, c in zip(grads, cols_g)], dim=2)
            out += (a_bar * g_bar).sum(dim=1)
        return norm(torch.relu(out))

    @staticmethod
    def _separable(acts, grads, share, plane):
        """Resizing every scale's maps to ``S×S`` and averaging them, as two matrix products.

        ``mean_t s_t · R_t X_t C_tᵀ = [R_1 … R_T] · concat_t(s_t · X_t C_tᵀ)`` (rows stacked):
        one ``S×ΣH_t`` product per channel instead of ``T`` separate resizes to ``S×S``.
        Returns the row matrix (``S×Σh_t``) and, per scale, the column matrices ``C_tᵀ``
        (``w_t×S``) for activations and gradients with the scale weights ``s_t`` folded in.
        """
        device = acts[0].device
        rows = torch.cat([interp_matrix(a.shape[-2], plane[0], device=device) for a in acts], dim=1)
        cols = []
        for t, a in enumerate(acts):
            c = interp_matrix(a.shape[-1], plane[1], device=device).t()           # w_t×S
            cols.append(share[:, t, None, None, None] * c)                        # B×1×w_t×S
        return rows, cols, cols
