"""CAMERAS (Jalwana, Akhtar, Bennamoun, Mian, CVPR 2021)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.methods.base import LAYER_PARAM, Method, Param, batch_size_param
from explain.core.methods.msgcam import multiscale_captures
from explain.core.ops import chunks, norm, upsample
from explain.core.registry import register_method


@register_method("cameras")
class Cameras(Method):
    """CAMERAS: activations and gradients averaged over valid up-scaled inputs, multiplied pixel-wise.

    Input sizes ``ζ_t = S + step·(t−1)``, ``t = 1…N`` (default 8 scales of step 100:
    224, 324, …, 924), bicubic upsampling of the input. Scales whose top-1 class differs from
    the target are dropped (the input scale alone is kept if none remains). ``A_t`` and
    ``G_t = ∂F_c/∂A_t`` (raw logit) are resized to ``S×S`` and averaged separately into
    ``Ā``, ``Ḡ`` (``K×S×S``); map ``norm(ReLU(Σ_k Ā_k ⊙ Ḡ_k))`` (``B×S×S``), no spatial pooling.
    ``channel_chunk`` channels are resized at a time to bound memory.
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
        Param("channel_chunk", "int", 64, minimum=1, maximum=8192,
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
        for sl in chunks(k, params["channel_chunk"]):
            a_bar = sum(share[:, t, None, None, None] * upsample(a[:, sl], plane) for t, a in enumerate(acts))
            g_bar = sum(share[:, t, None, None, None] * upsample(g[:, sl], plane) for t, g in enumerate(grads))
            out += (a_bar * g_bar).sum(dim=1)
        return norm(torch.relu(out))
