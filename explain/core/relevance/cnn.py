"""LRP for CNNs with zennit: composites (which rule for which layer) and canonizers (model rewrites).

Rules (Montavon et al., "Layer-wise relevance propagation: an overview", 2019; Kohlbrenner et
al., "Towards best practice in explaining neural network decisions with LRP", IJCNN 2020):

- ``epsilon_plus_box`` (default): z^B at the first convolution (bounded by the normalised image
  of an all-black and an all-white picture), z⁺ (= α1β0) in every other convolution, ε in the
  dense layers; activations pass relevance unchanged, average pools and sums split it in
  proportion to the contributions. With biases ignored (the default), a unit that z⁺ cannot
  explain (no positive contribution) passes its relevance on by the w² rule instead of
  dropping it (:class:`ZPlusWSquare`).
- ``epsilon_plus_flat``: the flat rule at the first layer instead of z^B.

zennit's γ-rule composite (``EpsilonGammaBox``) is not offered: its denominators change sign
on signed inputs, and on the ImageNet EfficientNet-Lite0 (whose residual streams carry no
activation) the input relevance reaches 1e28.

Canonizers make the model fit the rules and are undone on exit:

- batch norm is folded into the preceding convolution (:class:`MergeBatchNormAtomic`, which,
  unlike zennit's ``SequentialMergeBatchNorm``, also finds timm's ``BatchNormAct2d`` — a batch
  norm with its activation inside — and skips the folded norm's computation altogether);
- residual additions become a zennit ``Sum`` module, so the sum rule splits relevance between
  the branches instead of the gradient copying it to both: zennit's canonizers for torchvision
  ResNet blocks (as :class:`ResNetBasicBlockSumCanonizer` and :class:`ResNetBottleneckSumCanonizer`,
  which add along a leading dimension, see :func:`_residual_sum`), and :class:`TimmResidualCanonizer`
  for timm's ``InvertedResidual`` and ``DepthwiseSeparableConv`` (EfficientNet, MobileNet).

Conservation: by default every rule leaves the biases out (``ignore_bias``), so relevance only
flows to the layer inputs and ``Σ R_input`` equals the explained logit up to the shares of ε
and of the denominator stabilisers (both 1e-6, absolute): 5e-6 relative on the ImageNet
EfficientNet-Lite0, and float64 rounding on random ResNet18, VGG16 and EfficientNet-Lite0 with
both at 1e-12 (tests/engine/test_lrp_cnn.py). Textbook LRP lets biases absorb their share instead
(``ignore_bias=False``); after batch norm is folded into the convolutions those biases are
large, and on the ImageNet EfficientNet-Lite0 under ``epsilon_plus_box`` less than 0.1 % of the
logit then reaches the pixels, so the map would rest on a tiny residue.
Squeeze-excitation gates (multiplications) are not covered by a rule: models with them get the
gradient there, which does not conserve relevance; EfficientNet-Lite has none.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvTransposeNd
from zennit.attribution import Gradient
from zennit.core import Hook, RemovableHandle, RemovableHandleList
from zennit.canonizers import AttributeCanonizer, MergeBatchNorm
from zennit.composites import SpecialFirstLayerMapComposite
from zennit.layer import Sum
from zennit.rules import Epsilon, Flat, Norm, ZBox, ZPlus
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear

from explain.core.folding import folded_parameters, leaves_with_atomic_norms, norm_without_normalisation
from explain.core.hooks import HookSession
from explain.core.relevance.rules import conv2d_zbox, conv2d_zplus_wsquare

logger = logging.getLogger(__name__)

COMPOSITES = ("epsilon_plus_box", "epsilon_plus_flat")


class _RuleOutput(torch.autograd.Function):
    """The module's output unchanged in the forward pass; the hook's rule in the backward pass.

    ``output`` was computed from a detached input, so autograd holds no path through the
    module and never computes the plain gradient that a zennit ``Hook`` would compute first
    and then throw away. ``output`` is marked dirty (rather than returned as a view) so that
    in-place operations downstream (e.g. ``ReLU(inplace=True)``) stay allowed.
    """

    @staticmethod
    def forward(ctx, hook: "AutogradRule", module: nn.Module, x: Tensor, output: Tensor) -> Tensor:
        ctx.hook, ctx.module = hook, module
        # saved through autograd, so an in-place change of x before the backward pass raises
        # instead of silently feeding the rule other values
        ctx.save_for_backward(x if hook.needs_input else None)
        ctx.mark_dirty(output)
        return output

    @staticmethod
    def backward(ctx, relevance: Tensor):
        (x,) = ctx.saved_tensors
        x = None if x is None else x.detach()
        return None, None, ctx.hook.relevance(ctx.module, x, relevance), None


class AutogradRule(Hook):
    """A zennit rule for a single-input module whose backward pass is the rule alone.

    zennit's ``Hook`` lets autograd compute the plain gradient through the module and replaces
    it afterwards; for a convolution that is one full-size backward convolution per layer,
    wasted. Here the module runs on a detached input (frozen parameters, so no graph is
    recorded) and its output is tied to the input by :class:`_RuleOutput`, whose backward is
    :meth:`relevance`. The result equals the zennit hook's: both return ``relevance(...)`` as
    the input's gradient. Deactivation (``Composite.inactive``) is honoured for forward passes
    run while it is in effect.
    """

    #: whether :meth:`relevance` reads the module's input (else it gets ``None``)
    needs_input: bool = True

    def register(self, module: nn.Module) -> RemovableHandleList:
        return RemovableHandleList([
            RemovableHandle(self),
            module.register_forward_pre_hook(self._detach_input),
            module.register_forward_hook(self._attach_rule),
        ])

    def _detach_input(self, module, args):
        x = args[0] if args else None
        if not (self.active and isinstance(x, Tensor) and x.requires_grad and torch.is_grad_enabled()):
            self.stored_tensors.pop("input", None)
            return None
        self.stored_tensors["input"] = x
        return (x.detach(), *args[1:])

    def _attach_rule(self, module, args, output):
        x = self.stored_tensors.pop("input", None)
        if x is None:
            return None
        if not isinstance(output, Tensor):
            # the input was detached: without a tensor to carry the rule, the relevance path would be cut
            raise TypeError(
                f"{type(self).__name__} needs a module returning one tensor; {type(module).__name__} returned "
                f"{type(output).__name__}: map this module type to another rule in the composite"
            )
        return _RuleOutput.apply(self, module, x, output.detach())

    def relevance(self, module: nn.Module, x: Tensor | None, relevance: Tensor) -> Tensor:
        """The relevance of ``x`` (the module's detached input) given that of its output."""
        raise NotImplementedError

    def copy(self) -> "AutogradRule":
        return type(self)()


class ZPlusWSquare(AutogradRule):
    """zennit rule: z⁺ in a 2-D convolution, w² for the units without positive contributions.

    See :func:`explain.core.relevance.rules.conv2d_zplus_wsquare`. Plain z⁺ loses the relevance
    of units kept active only by their (folded batch-norm) bias; in EfficientNet-Lite0's
    depthwise convolutions that is over 90 % of the logit. Biases are left out.
    """

    def relevance(self, module, x, relevance):
        return conv2d_zplus_wsquare(
            x, module.weight.detach(), relevance,
            stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups,
        )


def stabilized_divide(numerator: Tensor, z: Tensor, stabilizer: float, rule: str) -> Tensor:
    """``numerator / stab(z)`` with zennit's stabiliser ``stab(z) = z + ε (sign z + [z = 0])``:
    ``z + ε`` for ``z ≥ 0`` (−0 included) and ``z − ε`` below. The same numbers as zennit's in
    three passes over ``z``, not six. ``rule`` names the rule in the error for a stabiliser that
    is not a number (zennit also accepts functions; these rules do not)."""
    if not isinstance(stabilizer, (int, float)):
        raise TypeError(f"{rule} needs a number as stabilizer, not {type(stabilizer).__name__}")
    return numerator / torch.where(z >= 0, z + stabilizer, z - stabilizer)


class ZBoxConv2d(AutogradRule):
    """zennit's ``ZBox`` for a 2-D convolution with biases left out, as an :class:`AutogradRule`.

    :func:`explain.core.relevance.rules.conv2d_zbox` with zennit's stabiliser
    ``stab(z) = z + ε (sign z + [z = 0])`` in ``s_j = R_j / stab(z_j)``. ``low``/``high`` broadcast
    to the input ``B×C×H×W``; bounds with a batch of one are convolved once for the whole batch.
    """

    def __init__(self, low: Tensor, high: Tensor, stabilizer: float = 1e-6):
        super().__init__()
        self.low, self.high, self.stabilizer = low, high, stabilizer

    def _divide(self, relevance: Tensor, z: Tensor) -> Tensor:
        return stabilized_divide(relevance, z, self.stabilizer, "ZBoxConv2d")

    def relevance(self, module, x, relevance):
        return conv2d_zbox(
            x, module.weight.detach(), relevance, self.low, self.high,
            module.stride, module.padding, module.dilation, module.groups, divide=self._divide,
        )

    def copy(self) -> "ZBoxConv2d":
        return ZBoxConv2d(self.low, self.high, self.stabilizer)


class PassThrough(AutogradRule):
    """zennit's ``Pass`` (relevance of the output handed unchanged to the input) for activations
    and batch norms, without autograd first computing their plain gradient (and zennit cloning
    every input) only to discard it."""

    needs_input = False

    def relevance(self, module, x, relevance):
        return relevance


class SumNorm(AutogradRule):
    """zennit's ``Norm`` on a ``Sum`` module: each summand gets the output's relevance in
    proportion to its value, ``R_k = x_k · R / stab(Σ_k x_k)`` with zennit's stabiliser
    ``stab(z) = z + ε (sign z + [z = 0])``.

    Shapes: the stacked summands ``x`` (the ``Sum``'s input) and ``R`` (its output's shape, ``x``
    without ``module.dim``). zennit's hook clones the stacked input, sums it again under autograd
    and back-propagates through the sum; here it is the sum, :func:`stabilized_divide` and one
    product.
    """

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__()
        self.stabilizer = stabilizer

    def relevance(self, module, x, relevance):
        quotient = stabilized_divide(relevance, module.forward(x), self.stabilizer, "SumNorm")
        return x * quotient.unsqueeze(module.dim)

    def copy(self) -> "SumNorm":
        return SumNorm(self.stabilizer)


class MergeBatchNormAtomic(MergeBatchNorm):
    """Fold every batch norm that directly follows a convolution/linear layer into that layer.

    Adjacency is judged in registration order (as zennit's ``SequentialMergeBatchNorm``) with
    batch norms treated as leaves, so timm's ``BatchNormAct2d(norm + activation)`` is found
    too. The folded norm keeps its activation and skips the normalisation altogether (its
    ``forward`` is overridden for the duration, as in :mod:`explain.core.folding`); a norm type
    that module does not know keeps running, with ``eps`` set to :data:`IDENTITY_EPS` so that
    it computes exactly the identity (zennit leaves ``eps``, a ``1/√(1+eps)`` scale; not 0:
    PyTorch releases before 2.12 reject a batch norm with ``eps = 0`` even in eval mode).
    """

    #: Positive, and lost when added to a unit variance in float32 and float64 alike.
    IDENTITY_EPS = 1e-20

    def __init__(self):
        super().__init__()
        self._eps = None
        self._skips = False

    def apply(self, root_module: nn.Module) -> list["MergeBatchNormAtomic"]:
        instances = []
        previous = None
        for leaf in leaves_with_atomic_norms(root_module):
            if isinstance(previous, self.linear_type) and isinstance(leaf, self.batch_norm_type):
                instance = self.copy()
                instance.register((previous,), leaf)
                instances.append(instance)
            previous = leaf
        return instances

    def register(self, linears, batch_norm) -> None:
        skip = norm_without_normalisation(batch_norm)
        self._eps = batch_norm.eps
        if skip is None or any(isinstance(linear, _ConvTransposeNd) for linear in linears):
            super().register(linears, batch_norm)
            batch_norm.eps = self.IDENTITY_EPS
            return
        # The norm's forward is replaced, so unlike zennit's merge this leaves its parameters
        # alone (nothing to reset now or restore later) and folds with the engine's formula
        # (explain.core.folding): half the tensor operations, on every LRP call.
        self.linears, self.batch_norm = linears, batch_norm
        self.linear_params = [(linear.weight.data, getattr(linear.bias, "data", None)) for linear in linears]
        self.batch_norm_params = {}
        for linear in linears:
            weight, bias = folded_parameters(linear, batch_norm)
            linear.weight.data = weight
            if linear.bias is None:
                linear.bias = nn.Parameter(bias, requires_grad=False)      # removed again by remove()
            else:
                linear.bias.data = bias
        batch_norm.forward = skip
        self._skips = True

    def remove(self) -> None:
        if self._skips:
            del self.batch_norm.forward
        super().remove()
        self.batch_norm.eps = self._eps


class StackedSum(Sum):
    """zennit's ``Sum`` (so the composites' ``Sum`` rule applies) whose result keeps the memory
    layout of the summed tensors.

    ``torch.sum`` over the stacking dimension returns a contiguous (NCHW) tensor even when the
    operands are channels-last, and every layer after the first residual block would run NCHW:
    slower convolutions, and relevance copied between layouts at every rule. The operands'
    own ``+`` keeps their layout.
    """

    def forward(self, input: Tensor) -> Tensor:
        return functools.reduce(torch.add, input.unbind(self.dim))


def _residual_sum(sum_module: nn.Module, shortcut: Tensor, branch: Tensor) -> Tensor:
    """``shortcut + branch`` through a :class:`StackedSum` over dimension 0, whose rule splits the
    relevance in proportion to the two terms. The operands are stacked on a new first dimension,
    not zennit's last: then the two are contiguous halves and the sum and the rule's products are
    plain element-wise passes, where a trailing pair dimension makes them strided reductions
    (ResNet18: 9.6 ms of its 207 ms LRP of two images)."""
    return sum_module(torch.stack([shortcut, branch], dim=0))


class _SumOnFirstDimension:
    """For zennit's torchvision ResNet canonizers: the block's ``Sum`` adds along dimension 0 and
    the block's forward stacks there (:func:`_residual_sum`)."""

    @classmethod
    def _attribute_map(cls, name, module):
        attributes = super()._attribute_map(name, module)
        if attributes is not None:
            attributes["canonizer_sum"] = StackedSum(dim=0)
        return attributes


class ResNetBasicBlockSumCanonizer(_SumOnFirstDimension, ResNetBasicBlockCanonizer):
    """zennit's canonizer for torchvision's ``BasicBlock`` with the skip addition of :func:`_residual_sum`."""

    @staticmethod
    def forward(self, x: Tensor) -> Tensor:
        branch = self.relu(self.bn1(self.conv1(x)))
        branch = self.bn2(self.conv2(branch))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(_residual_sum(self.canonizer_sum, shortcut, branch))


class ResNetBottleneckSumCanonizer(_SumOnFirstDimension, ResNetBottleneckCanonizer):
    """The same for torchvision's ``Bottleneck``."""

    @staticmethod
    def forward(self, x: Tensor) -> Tensor:
        branch = self.relu(self.bn1(self.conv1(x)))
        branch = self.relu(self.bn2(self.conv2(branch)))
        branch = self.bn3(self.conv3(branch))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(_residual_sum(self.canonizer_sum, shortcut, branch))


def _timm_block_types() -> tuple[type, ...]:
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    return DepthwiseSeparableConv, InvertedResidual


class TimmResidualCanonizer(AttributeCanonizer):
    """Route the skip addition of timm's inverted-residual blocks through a zennit ``Sum``.

    timm computes ``x = drop_path(f(x)) + shortcut`` with a bare ``+``, whose gradient gives both
    operands the full relevance. The replacement ``forward`` is the same computation with the
    addition done by a ``Sum`` module, which the composites map to the sum (z) rule. Blocks
    without a skip (stride 2 or a change of width) are left alone.
    """

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module):
        depthwise, inverted = _timm_block_types()
        if type(module) is inverted and module.has_skip:
            return {"forward": cls._inverted_forward.__get__(module), "canonizer_sum": StackedSum(dim=0)}
        if type(module) is depthwise and module.has_skip:
            return {"forward": cls._depthwise_forward.__get__(module), "canonizer_sum": StackedSum(dim=0)}
        return None

    @staticmethod
    def _inverted_forward(self, x: Tensor) -> Tensor:
        shortcut = x
        if self.conv_s2d is not None:
            x = self.bn_s2d(self.conv_s2d(x))
        x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        x = self.se(self.aa(x))
        x = self.bn3(self.conv_pwl(x))
        return _residual_sum(self.canonizer_sum, shortcut, self.drop_path(x))

    @staticmethod
    def _depthwise_forward(self, x: Tensor) -> Tensor:
        shortcut = x
        if self.conv_s2d is not None:
            x = self.bn_s2d(self.conv_s2d(x))
        x = self.bn1(self.conv_dw(x))
        x = self.se(self.aa(x))
        x = self.bn2(self.conv_pw(x))
        return _residual_sum(self.canonizer_sum, shortcut, self.drop_path(x))

    def copy(self) -> "TimmResidualCanonizer":
        return TimmResidualCanonizer()


def canonizers() -> list:
    """Canonizers for every CNN the site loads; each one is a no-op on models it does not match."""
    return [
        MergeBatchNormAtomic(),
        ResNetBottleneckSumCanonizer(),
        ResNetBasicBlockSumCanonizer(),
        TimmResidualCanonizer(),
    ]


def make_composite(
    name: str,
    low: Tensor,
    high: Tensor,
    epsilon: float = 1e-6,
    ignore_bias: bool = True,
    stabilizer: float = 1e-6,
):
    """The zennit composite ``name`` (one of :data:`COMPOSITES`) with fresh canonizers.

    ``low``/``high`` are the input bounds for z^B, ``B×C×H×W`` like the input batch or ``1×C×H×W``
    for bounds shared by every image (convolved once for the batch). With
    ``ignore_bias`` every rule leaves the biases out (zennit's ``zero_params=["bias"]``), so no
    relevance is absorbed by them and the input relevance sums to the explained logit.
    ``stabilizer`` is added (with the sign) to the denominators of the other rules (zennit's
    default 1e-6 is absolute: it takes a visible share where activations are ~1e-4).
    """
    zero = ["bias"] if ignore_bias else None
    # zennit's layer_map_base, with PassThrough for its Pass and SumNorm for its Norm on sums (the
    # same rules, without the wasted gradient)
    layer_map = [
        (Activation, PassThrough()),
        (Sum, SumNorm(stabilizer=stabilizer)),
        (AvgPool, Norm(stabilizer=stabilizer)),
        (BatchNorm, PassThrough()),
        (nn.Conv2d, ZPlusWSquare() if ignore_bias else ZPlus(stabilizer=stabilizer)),
        (Convolution, ZPlus(stabilizer=stabilizer, zero_params=zero)),
        (torch.nn.Linear, Epsilon(epsilon=epsilon, zero_params=zero)),
    ]
    if name == "epsilon_plus_box":
        first_map = [(Convolution, ZBox(low=low, high=high, stabilizer=stabilizer, zero_params=zero))]
        if ignore_bias:
            first_map.insert(0, (nn.Conv2d, ZBoxConv2d(low=low, high=high, stabilizer=stabilizer)))
    elif name == "epsilon_plus_flat":
        first_map = [(Linear, Flat(stabilizer=stabilizer, zero_params=zero))]
    else:
        raise ValueError(f"unknown LRP composite {name!r}; choose one of {list(COMPOSITES)}")
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=first_map, canonizers=canonizers())


def cnn_relevance(
    model: nn.Module,
    inputs: Tensor,
    output_relevance: Callable[[Tensor], Tensor] | Tensor,
    *,
    low: Tensor,
    high: Tensor,
    composite: str = "epsilon_plus_box",
    epsilon: float = 1e-6,
    ignore_bias: bool = True,
    stabilizer: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Relevance of every input pixel and channel, ``B×3×H×W``, and the logits ``B×C``.

    Args:
        model: a CNN in eval mode (left exactly as it was: canonizers and hooks are undone,
            training flags and parameter gradients restored).
        inputs: normalised batch ``B×3×H×W``.
        output_relevance: ``B×C`` relevance of the logits, or a function of the logits giving it
            (e.g. the one-hot mask times the logits, to explain the logit itself).
        low, high: bounds of the normalised input, broadcastable to ``inputs``.
        composite: one of :data:`COMPOSITES`; epsilon: of the ε-rule in the dense layers.
        ignore_bias, stabilizer: see :func:`make_composite`.

    The logits are those of the canonized model, equal to the original's up to float rounding.
    """
    x = inputs.detach().clone().requires_grad_(True)
    # one image's worth of bounds: they are the same for every image of the batch
    low = (low.to(x) + torch.zeros_like(x[:1])).detach()
    high = (high.to(x) + torch.zeros_like(x[:1])).detach()
    rules = make_composite(composite, low, high, epsilon, ignore_bias, stabilizer)
    with HookSession(model) as session:
        session.freeze_parameters()
        model.eval()
        with Gradient(model=model, composite=rules) as attributor:
            logits, relevance = attributor(x, output_relevance)
    return relevance.detach(), logits.detach()


__all__ = [
    "COMPOSITES", "MergeBatchNormAtomic", "ResNetBasicBlockSumCanonizer", "ResNetBottleneckSumCanonizer",
    "StackedSum", "SumNorm", "TimmResidualCanonizer", "canonizers", "make_composite", "cnn_relevance",
]
