"""A classifier as the explainers see it: the module plus what they need to know about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Layer roles a model names a default layer for. Methods ask for a role, users may override
#: it with any name from ``Classifier.hookable_layers()``.
LAYER_ROLES = (
    "cam",        # CNN: the last convolutional feature map (K×h×w) for the CAM family
    "tokens",     # ViT: the block output whose patch tokens are reshaped to a grid
)


@dataclass(frozen=True, eq=False)
class Classifier:
    """An image classifier ready to explain.

    ``module`` maps a normalised batch ``B×3×S×S`` (``S = input_size``) to logits ``B×C``.
    It is in eval mode and lives on ``device``; explainers never change its parameters,
    its training flag or its gradients.
    """

    name: str
    module: nn.Module
    family: str                                  # "cnn" or "vit"
    class_names: tuple[str, ...]
    default_layers: Mapping[str, str] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    resize_size: int = 256                       # shorter side before the centre crop
    weights_checksum: str = ""                   # sha256 of the weights file, "" for random weights
    # Multi-pass methods may fold batch norms into the convolutions before them
    # (explain.core.folding): only for architectures known to register each such convolution
    # right before its norm, so never for uploaded models.
    fold_batch_norms: bool = False
    # Images per pass for the perturbation methods on a CPU where this model prefers another
    # number than the device's default (None: methods.base.CPU_BATCH_SIZE).
    cpu_batch_size: int | None = None
    # "NHWC" for models whose blocks emit channels-last maps B×h×w×C (timm's Swin: its stages and
    # final norm); the CAM methods move the channels first (methods.base.as_feature_map).
    feature_layout: str = "NCHW"

    def __post_init__(self) -> None:
        if self.family not in ("cnn", "vit"):
            raise ValueError(f"family must be 'cnn' or 'vit', not {self.family!r}")
        if self.feature_layout not in ("NCHW", "NHWC"):
            raise ValueError(f"feature_layout must be 'NCHW' or 'NHWC', not {self.feature_layout!r}")

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def hookable_layers(self) -> list[str]:
        """Names of the sub-modules a user may pick as a target layer, input to output."""
        return [name for name, _ in self.module.named_modules() if name]

    def layer(self, name: str) -> nn.Module:
        """The sub-module called ``name``; a clear error lists where to look when it is absent."""
        # A walk down the dotted path, not over every module: methods look their layer up on
        # every call.
        try:
            if not name:
                raise AttributeError(name)
            return self.module.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"model {self.name!r} has no layer {name!r}; "
                f"choose one of Classifier.hookable_layers() (e.g. {self.default_layers})"
            ) from None

    def default_layer(self, role: str) -> str:
        try:
            return self.default_layers[role]
        except KeyError:
            raise ValueError(f"model {self.name!r} ({self.family}) has no default {role!r} layer") from None

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``B×3×H×W`` pixels in [0, 1] → the model's input space."""
        mean = torch.tensor(self.mean, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's input space → pixels in [0, 1] (inverse of ``normalize``)."""
        mean = torch.tensor(self.mean, device=inputs.device, dtype=inputs.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=inputs.device, dtype=inputs.dtype).view(1, 3, 1, 1)
        return inputs * std + mean
