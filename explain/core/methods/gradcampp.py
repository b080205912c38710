"""Grad-CAM++ (Chattopadhyay et al., WACV 2018)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.methods.base import CamMethod
from explain.core.registry import register_method


@register_method("gradcampp")
class GradCamPlusPlus(CamMethod):
    """Grad-CAM++: pixel-weighted positive gradients of the raw logit.

    ``α_k,ij = G² / (2G² + Σ_ab A_k,ab · G³)`` (the closed form for an exponential score, in
    which higher derivatives are powers of the first), ``w_k = Σ_ij α_k,ij ReLU(G_k,ij)``;
    map ``ReLU(Σ_k w_k A_k)`` (``B×h×w``). ``α`` is 0 where its denominator is 0.
    Chattopadhyay et al., WACV 2018.

    Example::

        [e] = explain(classifier, x, "gradcampp")
    """

    label: ClassVar[str] = "Grad-CAM++"

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        g2 = gradients * gradients
        g3 = g2 * gradients
        denom = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
        ok = denom != 0
        alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g2))
        return (alpha * torch.relu(gradients)).sum(dim=(2, 3))
