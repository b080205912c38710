"""Group-CAM (Zhang, Rao, Yang, AAAI 2021)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.handle import Classifier
from explain.core.methods.base import (
    LAYER_PARAM, Method, Param, activations_and_gradients, batch_size_param, target_probabilities,
)
from explain.core.ops import blur, norm, percentile, split_sizes, upsample
from explain.core.registry import register_method

GROUP_PARAMS: tuple[Param, ...] = (
    Param("groups", "int", 32, minimum=1, maximum=4096, help="Number of groups B of adjacent channels."),
    Param("percentile", "float", 70.0, minimum=0.0, maximum=100.0,
          help="Denoising: values at or below this percentile of each group map become 0."),
    Param("blur_kernel", "int", 51, minimum=1, maximum=301, help="Gaussian blur kernel size (odd) of the baseline image."),
    Param("blur_sigma", "float", 50.0, minimum=0.01, maximum=1000.0, help="Gaussian blur sigma of the baseline image."),
)


def group_sum(maps: Tensor, groups: int) -> Tensor:
    """``B×K×h×w`` → ``B×R×h×w``: sums over ``R = min(groups, K)`` groups of adjacent channels.

    With ``K`` divisible by ``groups`` every group has ``g = K/groups`` channels; otherwise the
    first ``K mod groups`` groups get one more.
    """
    parts = torch.split(maps, split_sizes(maps.shape[1], groups), dim=1)
    return torch.stack([p.sum(dim=1) for p in parts], dim=1)


def denoise(maps: Tensor, q: float) -> Tensor:
    """Zero every value at or below the ``q``-th percentile of its own map (``…×H×W``)."""
    threshold = percentile(maps, q)[..., None, None]
    return torch.where(maps > threshold, maps, 0.0)


def perturbation_weighted_map(
    classifier: Classifier,
    inputs: Tensor,
    targets: Tensor,
    group_maps: Tensor,
    *,
    q: float,
    blur_kernel: int,
    blur_sigma: float,
    batch_size: int,
) -> Tensor:
    """Steps 2–5 of Group-CAM on grouped maps already at input resolution.

    Args:
        inputs: normalised batch ``B×3×S×S``; targets ``LongTensor[B]``.
        group_maps: ``Σ_{k∈r} M_k`` for each group, ``B×R×S×S`` (before the ReLU).

    ``M_r = denoise(ReLU(group_map_r))``; ``M'_r = norm(M_r)``;
    ``I_r = I ⊙ M'_r + I' ⊙ (1 − M'_r)`` with ``I' = blur(I)``;
    ``α_r = softmax(F(I_r))_c − softmax(F(I'))_c``; returns ``ReLU(Σ_r α_r M_r)`` (``B×S×S``).
    The ``B·R`` perturbed images go through the model in chunks of ``batch_size``, plus one
    batch of the ``B`` blurred images.
    """
    b, r = group_maps.shape[:2]
    m = denoise(torch.relu(group_maps), q)
    m_norm = norm(m).to(inputs.dtype)
    blurred = blur(inputs, blur_kernel, blur_sigma)
    targets = targets.to(inputs.device)
    image_of = torch.arange(b, device=inputs.device).repeat_interleave(r)
    flat_masks = m_norm.reshape(b * r, 1, *m_norm.shape[-2:])

    def build(sl: slice):
        i = image_of[sl]
        mask = flat_masks[sl]
        return inputs[i] * mask + blurred[i] * (1 - mask), targets[i]

    scores = target_probabilities(classifier, build, b * r, batch_size).view(b, r)
    base = target_probabilities(classifier, lambda sl: (blurred[sl], targets[sl]), b, batch_size)
    alpha = scores - base[:, None]
    return torch.relu(torch.einsum("br,brhw->bhw", alpha, m.float()))


@register_method("groupcam")
class GroupCam(Method):
    """Group-CAM: Grad-CAM channel maps, grouped, denoised and scored by blurred-background perturbation.

    1. ``M_k = up(A_k · w_k, S×S)`` with Grad-CAM weights ``w_k = mean_ij ∂F_c/∂A_k,ij`` (raw logit).
    2. ``B`` groups of adjacent channels (default 32): ``M_r = ReLU(Σ_{k∈r} M_k)``.
    3. Values of ``M_r`` at or below its ``θ``-th percentile (default 70) set to 0; ``M'_r = norm(M_r)``.
    4. ``I_r = I ⊙ M'_r + I' ⊙ (1 − M'_r)``, ``I' = blur(I)`` (Gaussian, kernel 51, sigma 50).
    5. ``α_r = softmax(F(I_r))_c − softmax(F(I'))_c``; map ``ReLU(Σ_r α_r M_r)`` (``B×S×S``).

    One forward/backward pass, then ``B + 1`` forward passes per image, batched.
    Zhang, Rao, Yang, AAAI 2021.

    Example::

        [e] = explain(classifier, x, "groupcam", params={"groups": 16})
    """

    label: ClassVar[str] = "Group-CAM"
    families: ClassVar[frozenset[str]] = frozenset({"cnn"})
    group = "cam"
    folds_batch_norms: ClassVar[bool] = True
    uses_gradients: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (LAYER_PARAM, *GROUP_PARAMS, batch_size_param())

    def attribute(self, classifier, inputs, targets, params, generator=None) -> Tensor:
        acts, grads, _, _ = activations_and_gradients(classifier, inputs, targets, params["layer"])
        weights = grads.float().mean(dim=(2, 3))
        # Upsampling is linear, so grouping before it equals grouping the upsampled M_k.
        grouped = group_sum(acts.float() * weights[:, :, None, None], params["groups"])
        grouped = upsample(grouped, tuple(inputs.shape[-2:]))
        return perturbation_weighted_map(
            classifier, inputs, targets, grouped,
            q=params["percentile"], blur_kernel=params["blur_kernel"], blur_sigma=params["blur_sigma"],
            batch_size=params["batch_size"],
        )
