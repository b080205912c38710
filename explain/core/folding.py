"""Batch norms folded into the convolutions before them, for the duration of a call.

In eval mode a batch norm is an affine map per channel, ``y = γ (z − μ) / √(σ² + ε) + β``; after
a convolution ``z = W ∗ x + b`` the two are one convolution with

    W'_o = W_o · s_o,   b'_o = (b_o − μ_o) · s_o + β_o,   s_o = γ_o / √(σ²_o + ε)      (W: O×I/g×kh×kw)

so the norm's pass over the activations disappears. On this project's CPUs that pass is a quarter
of EfficientNet-Lite0's forward time (its depthwise convolutions are cheap, the norms' memory
traffic is not); ResNet18 gains less. :func:`folded_batch_norms` overrides the ``forward`` of each
folded pair on the instances and deletes the overrides on exit: parameters, buffers, hooks and
module types are never touched, so hooks on either module still fire and the model is left as it
was. The maps differ from the unfolded model's by rounding only.

Pairs are found by registration order (a convolution registered right before its batch norm),
which is how every built-in CNN is written but not a guarantee for any model: a convolution
whose output also feeds something other than its norm would be folded wrongly. The engine folds
only the models that declare it (``Classifier.fold_batch_norms``, set for the built-in CNNs and
checked against the unfolded model by the tests).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def leaves_with_atomic_norms(module: nn.Module) -> Iterator[nn.Module]:
    """Modules in registration order, where a batch norm counts as a leaf even if it has children
    (timm's ``BatchNormAct2d`` holds its activation)."""
    children = list(module.children())
    if isinstance(module, _BatchNorm) or not children:
        yield module
        return
    for child in children:
        yield from leaves_with_atomic_norms(child)


def norm_without_normalisation(norm: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """What ``norm`` computes once its affine map is folded away, or None if it is not foldable."""
    if not isinstance(norm, _BatchNorm) or norm.training or norm.running_mean is None:
        return None
    if type(norm) is nn.BatchNorm2d:
        return lambda x: x
    if type(norm).__name__ == "BatchNormAct2d" and hasattr(norm, "act") and hasattr(norm, "drop"):
        return lambda x: norm.act(norm.drop(x))          # timm: norm, dropout (eval: none), activation
    return None


def conv_norm_pairs(module: nn.Module) -> list[tuple[nn.Conv2d, _BatchNorm]]:
    """Each plain ``Conv2d`` registered right before an eval-mode batch norm it can be folded into."""
    pairs, previous = [], None
    for leaf in leaves_with_atomic_norms(module):
        if (type(previous) is nn.Conv2d and norm_without_normalisation(leaf) is not None
                and leaf.num_features == previous.out_channels):
            pairs.append((previous, leaf))
        previous = leaf
    return pairs


def folded_parameters(conv: nn.Conv2d, norm: _BatchNorm) -> tuple[Tensor, Tensor]:
    """``(W', b')`` of the module docstring, detached."""
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight
        bias = -norm.running_mean if conv.bias is None else conv.bias - norm.running_mean
        bias = bias * scale
        if norm.bias is not None:
            bias = bias + norm.bias
        weight = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    return weight, bias


@contextlib.contextmanager
def folded_batch_norms(module: nn.Module) -> Iterator[int]:
    """Run ``module`` with its batch norms folded into the convolutions before them; yields the
    number of folded pairs. The parameters are read once, on entry."""
    overridden: list[nn.Module] = []
    try:
        for conv, norm in conv_norm_pairs(module):
            weight, bias = folded_parameters(conv, norm)
            conv.forward = _folded_conv(conv, weight, bias)
            norm.forward = norm_without_normalisation(norm)
            overridden += [conv, norm]
        yield len(overridden) // 2
    finally:
        for m in overridden:
            del m.forward


def _folded_conv(conv: nn.Conv2d, weight: Tensor, bias: Tensor) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        return conv._conv_forward(x, weight, bias)
    return forward


__all__ = [
    "conv_norm_pairs", "folded_batch_norms", "folded_parameters", "leaves_with_atomic_norms", "norm_without_normalisation",
]
