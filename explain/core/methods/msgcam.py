"""MSG-CAM: Group-CAM over multi-scale inputs."""
from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import Tensor

from explain.core.handle import Classifier
from explain.core.methods.base import LAYER_PARAM, Method, Param, activations_and_gradients, batch_size_param
from explain.core.methods.groupcam import GROUP_PARAMS, group_sum, perturbation_weighted_map
from explain.core.ops import as_plane, chunks, resize_images, scaled_sizes, upsample, upsampled_mean_weights
from explain.core.registry import register_method


def multiscale_captures(
    classifier: Classifier,
    inputs: Tensor,
    targets: Tensor,
    layer: str,
    sizes: Sequence[int | tuple[int, int]],
    mode: str,
    batch_size: int,
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Activations and logit gradients of ``layer`` for the batch resized to each of ``sizes``
    (``(h, w)`` pairs, or ints for squares).

    One forward and one backward pass per size, on chunks of images holding at most as many
    pixels as ``batch_size`` images of the input size (large scales cost memory). Returns ``(A, G, valid)``:
    lists of ``B×K×h_t×w_t`` tensors and a boolean ``B×T`` tensor, true where the top-1 class
    of ``F(up(I, ζ_t))`` equals the target. An image valid at no scale falls back to the first
    scale alone (the input size when ``sizes[0]`` is it).
    """
    acts, grads, valid = [], [], []
    targets = targets.to(inputs.device)
    base = int(inputs.shape[-1]) * int(inputs.shape[-2])
    for size in sizes:
        h, w = as_plane(size)
        per = max(1, (batch_size * base) // (h * w))
        parts = []
        for sl in chunks(inputs.shape[0], per):
            x = resize_images(inputs[sl], size, mode)
            parts.append(activations_and_gradients(classifier, x, targets[sl], layer))
        # contiguous NCHW: the NHWC maps of a channels-last forward pass slow the products below
        acts.append(torch.cat([p[0] for p in parts]).float().contiguous())
        grads.append(torch.cat([p[1] for p in parts]).float().contiguous())
        logits = torch.cat([p[2] for p in parts])
        valid.append(logits.argmax(dim=1) == targets)
    valid_t = torch.stack(valid, dim=1)
    none = ~valid_t.any(dim=1)
    valid_t[none, 0] = True
    return acts, grads, valid_t


@register_method("msgcam")
class MsgCam(Method):
    """MSG-CAM: Group-CAM on activations and gradients averaged over the valid input scales.

    1. ``c`` the target (the engine's default: top-1 class of ``F(I)``).
    2. For ``t = 1…N``: ``ζ_t = S + step·(t−1)`` (default ``N = 4``, step 100: 224…524),
       ``I_t = up(I, ζ_t)`` (a non-square input: its shorter side becomes ``ζ_t``, the aspect
       ratio is kept, see :func:`explain.core.ops.scaled_sizes`); only if ``argmax F(I_t) = c`` record ``A_t`` and
       ``G_t = ∂F_c(I_t)/∂A_t`` (raw logit), resized to ``S×S``.
    3. ``Ā``, ``Ḡ``: their means over the ``t_max`` valid scales (the input scale alone if none).
    4. ``w_k = mean_ij Ḡ_k,ij``; ``M = Ā · w``.
    5. Group-CAM steps 2–5 on ``M`` (groups, percentile denoise, blurred perturbation,
       softmax score differences); map ``ReLU(Σ_r α_r M_r)`` with un-normalised ``M_r``.

    ``K×S×S`` tensors are never built: resizing is linear, so ``mean_ij up(G_t)`` is a fixed
    weighted sum of ``G_t`` and the group sums commute with the resize and the scale mean.
    Cost: ``N`` forward/backward passes and ``B + 1`` forward passes per image, batched.

    Example::

        [e] = explain(classifier, x, "msgcam", params={"scales": 3, "step": 50})
    """

    label: ClassVar[str] = "MSG-CAM"
    families: ClassVar[frozenset[str]] = frozenset({"cnn"})
    group = "cam"
    resizes_inputs: ClassVar[bool] = True
    folds_batch_norms: ClassVar[bool] = True
    uses_gradients: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        LAYER_PARAM,
        Param("scales", "int", 4, minimum=1, maximum=16, help="Number N of input sizes."),
        Param("step", "int", 100, minimum=1, maximum=1024, help="Pixels added to the input size per scale."),
        *GROUP_PARAMS,
        Param("interpolation", "choice", "bilinear", choices=("bilinear", "bicubic"),
              help="How the input is resized to each scale."),
        batch_size_param(),
    )

    def attribute(self, classifier, inputs, targets, params, generator=None) -> Tensor:
        plane = tuple(inputs.shape[-2:])
        sizes = scaled_sizes(plane, params["scales"], params["step"])
        acts, grads, valid = multiscale_captures(
            classifier, inputs, targets, params["layer"], sizes, params["interpolation"], params["batch_size"]
        )
        share = valid.float() / valid.float().sum(dim=1, keepdim=True)          # B×T, rows sum to 1
        weights = 0
        for t, g in enumerate(grads):
            mw = upsampled_mean_weights(g.shape[-2], g.shape[-1], plane, device=g.device)
            weights = weights + share[:, t:t + 1] * torch.einsum("bkhw,hw->bk", g, mw)
        grouped = 0
        for t, a in enumerate(acts):
            g_t = upsample(group_sum(a * weights[:, :, None, None], params["groups"]), plane)
            grouped = grouped + share[:, t, None, None, None] * g_t
        return perturbation_weighted_map(
            classifier, inputs, targets, grouped,
            q=params["percentile"], blur_kernel=params["blur_kernel"], blur_sigma=params["blur_sigma"],
            batch_size=params["batch_size"],
        )
