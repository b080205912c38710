"""XGrad-CAM (Fu et al., BMVC 2020)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.methods.base import CamMethod
from explain.core.registry import register_method


@register_method("xgradcam")
class XGradCam(CamMethod):
    """XGrad-CAM: gradients averaged with the activation's own spatial distribution as weights.

    ``w_k = Σ_ij (A_k,ij / Σ_ab A_k,ab) · G_k,ij`` (0 for a channel whose activations sum to 0);
    map ``ReLU(Σ_k w_k A_k)`` (``B×h×w``). Fu et al., BMVC 2020.

    Example::

        [e] = explain(classifier, x, "xgradcam")
    """

    label: ClassVar[str] = "XGrad-CAM"

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        total = activations.sum(dim=(2, 3))
        ok = total != 0
        raw = (activations * gradients).sum(dim=(2, 3))
        return torch.where(ok, raw / torch.where(ok, total, torch.ones_like(total)), torch.zeros_like(raw))
