"""Any ``torch.nn.Module`` image classifier as a :class:`~explain.core.handle.Classifier`.

:func:`wrap_model` takes the module with its preprocessing and class names and finds what the
explainers need to know on its own: the model family (``"vit"`` for timm's plain
vision transformers, whose blocks emit ``B×T×D`` tokens; ``"cnn"`` otherwise) and the default
layer per role (:func:`find_default_layers`).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .handle import IMAGENET_MEAN, IMAGENET_STD, Classifier


def model_family(module: nn.Module) -> str:
    """``"vit"`` for a plain vision transformer (patch embedding, a prefix/class token, a flat
    list of ``blocks``), ``"cnn"`` for everything with spatial feature maps (CNNs, Swin)."""
    blocks = getattr(module, "blocks", None)
    if (
        isinstance(blocks, (nn.ModuleList, nn.Sequential)) and len(blocks) > 0
        and hasattr(module, "patch_embed") and getattr(module, "cls_token", None) is not None
        and hasattr(blocks[-1], "attn") and hasattr(blocks[-1], "norm1")
    ):
        return "vit"
    return "cnn"


def feature_layout_of(module: nn.Module, family: str) -> str:
    """``"NHWC"`` for timm models that declare channels-last stage outputs (Swin), else ``"NCHW"``."""
    return "NHWC" if family == "cnn" and getattr(module, "output_fmt", None) == "NHWC" else "NCHW"


def last_spatial_layer(module: nn.Module, input_size: int, *, label: str = "the model") -> str:
    """The last sub-module whose output is a spatial ``B×K×h×w`` map (``h, w > 1``), found with one
    traced forward pass of a zero image (no gradients; the module's training flag is kept)."""
    finished: list[str] = []
    handles = []

    def hook_for(layer: str) -> Callable:
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
                finished.append(layer)
        return hook

    was_training = module.training
    try:
        for layer, sub in module.named_modules():
            if layer:
                handles.append(sub.register_forward_hook(hook_for(layer)))
        parameter = next(module.parameters(), None)
        kwargs = {} if parameter is None else {"device": parameter.device, "dtype": parameter.dtype}
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, 3, input_size, input_size, **kwargs))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    if not finished:
        raise ValueError(f"{label} has no layer with a spatial feature map to explain")
    return finished[-1]


def find_default_layers(module: nn.Module, family: str, input_size: int = 224, *, label: str = "the model") -> dict[str, str]:
    """The layer per role the explainers use unless a user picks another.

    - ViT: the last block's ``norm1`` (role ``tokens``): the tokens the last attention reads,
      still carrying a gradient to every patch (the block's *output* feeds only the class token
      through the final norm and head, so its patch tokens' gradients are zero).
    - VGG-style ``features`` stacks: the ReLU after the last convolution, before the final pool.
    - otherwise the last module whose output is still a spatial map (:func:`last_spatial_layer`).
    """
    if family == "vit":
        return {"tokens": f"blocks.{len(module.blocks) - 1}.norm1"}
    features = getattr(module, "features", None)
    if isinstance(features, nn.Sequential) and type(module).__name__ == "VGG":
        relus = [n for n, m in features.named_children() if isinstance(m, nn.ReLU)]
        if relus:
            return {"cam": f"features.{relus[-1]}"}
    return {"cam": last_spatial_layer(module, input_size, label=label)}


def wrap_model(
    module: nn.Module,
    *,
    name: str = "model",
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    input_size: int = 224,
    resize_size: int | None = None,
    family: str | None = None,
    default_layers: Mapping[str, str] | None = None,
    device: torch.device | str | None = None,
) -> Classifier:
    """Wrap an image classifier (``B×3×S×S`` normalised → ``B×C`` logits) for :func:`explain.core.explain`.

    Args:
        module: the classifier. It is put in eval mode with frozen parameters, in place (and
            moved to ``device`` if one is given); pass a copy to keep yours as it is.
        name: shown in errors and manifests.
        class_names: one per logit; default ``"class 0"``, … (``num_classes`` of them, or as
            many as one forward pass gives logits).
        mean, std, input_size, resize_size: the preprocessing the model was trained with
            (``resize_size``: the shorter side before the centre crop, default ``input_size / 0.875``).
        family: ``"cnn"`` or ``"vit"``; default found by :func:`model_family`.
        default_layers: layer per role (``{"cam": ...}`` or ``{"tokens": ...}``); default found
            by :func:`find_default_layers`.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap_model takes a torch.nn.Module, not {type(module).__name__}")
    if next(module.parameters(), None) is None:
        raise ValueError(f"{name!r} has no parameters: it is not a trained classifier")
    from .zoo import ready_for_inference

    ready_for_inference(module, device)
    family = family or model_family(module)
    if class_names is None:
        if num_classes is None:
            parameter = next(module.parameters())
            with torch.no_grad():
                logits = module(torch.zeros(1, 3, input_size, input_size, device=parameter.device, dtype=parameter.dtype))
            if logits.dim() != 2:
                raise ValueError(f"{name!r} gives outputs of shape {tuple(logits.shape)}, not B×C logits")
            num_classes = int(logits.shape[1])
        class_names = [f"class {i}" for i in range(num_classes)]
    elif num_classes is not None and num_classes != len(class_names):
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    layers = dict(default_layers) if default_layers else find_default_layers(module, family, input_size, label=repr(name))
    return Classifier(
        name=name,
        module=module,
        family=family,
        class_names=tuple(str(c) for c in class_names),
        default_layers=layers,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        input_size=int(input_size),
        resize_size=int(resize_size) if resize_size else int(round(input_size / 0.875)),
        feature_layout=feature_layout_of(module, family),
    )
