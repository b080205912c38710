"""LayerCAM (Jiang et al., IEEE TIP 2021)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.methods.base import CamMethod
from explain.core.registry import register_method


@register_method("layercam")
class LayerCam(CamMethod):
    """LayerCAM: every location weighted by its own positive gradient.

    Map ``ReLU(Σ_k ReLU(G_k) ⊙ A_k)`` (``B×h×w``), ``G`` the gradient of the raw logit.
    Jiang et al., IEEE TIP 2021.

    Example::

        [e] = explain(classifier, x, "layercam")
    """

    label: ClassVar[str] = "LayerCAM"

    def cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return torch.relu((torch.relu(gradients) * activations).sum(dim=1))
