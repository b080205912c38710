"""Grad-CAM (Selvaraju et al., ICCV 2017)."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from explain.core.methods.base import CamMethod
from explain.core.registry import register_method


@register_method("gradcam")
class GradCam(CamMethod):
    """Grad-CAM: channel weights are the spatially averaged gradients of the raw logit.

    ``w_k = mean_ij ∂F_c/∂A_k,ij``; map ``ReLU(Σ_k w_k A_k)`` at the layer's resolution
    (``B×h×w``). On a ViT the last block's normed patch tokens are reshaped to a ``√(s−1)``
    grid ("Grad-CAM on tokens"). Selvaraju et al., ICCV 2017.

    Example::

        from explain.core.engine import explain
        [e] = explain(classifier, x, "gradcam")       # x: 1×3×224×224, normalised
        e.saliency.shape                              # torch.Size([224, 224])
    """

    label: ClassVar[str] = "Grad-CAM"
    families: ClassVar[frozenset[str]] = frozenset({"cnn", "vit"})

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return gradients.mean(dim=(2, 3))
