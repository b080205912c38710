"""The shortcuts of the CNN LRP rules are exact: each skips only work whose result is zero.

``conv2d_zplus_wsquare`` is compared with the full formula written out here (every x⁻ term and
the w² back-projection always computed), on inputs that take each shortcut and on inputs
that do not; the operator profiler shows which convolutions actually ran. The autograd rule
hooks of ``explain.core.relevance.cnn`` are compared with the zennit hooks they replace.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.functional import conv2d
from torch.nn.grad import conv2d_input
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite
from zennit.core import BasicHook
from zennit.layer import Sum
from zennit.rules import Norm, Pass, ZBox
from zennit.types import Activation, BatchNorm

from explain.core.relevance import rules
from explain.core.relevance.cnn import (
    PassThrough, StackedSum, SumNorm, ZBoxConv2d, ZPlusWSquare, cnn_relevance, make_composite,
)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
LOW, HIGH = (0 - MEAN) / STD, (1 - MEAN) / STD


def full_zplus_wsquare(x, w, r, stride=1, padding=0, dilation=1, groups=1):
    """Every term of the rule, none skipped: z⁺ with x⁺w⁺ and x⁻w⁻, plus w² for the dead units."""
    conv = lambda inp, weight: conv2d(inp, weight, None, stride, padding, dilation, groups)  # noqa: E731
    back = lambda weight, s: conv2d_input(x.shape, weight, s, stride, padding, dilation, groups)  # noqa: E731
    x_pos, x_neg, w_pos, w_neg = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    z = conv(x_pos, w_pos) + conv(x_neg, w_neg)
    alive = z > 0
    s = torch.where(alive, r / torch.where(alive, z, torch.ones_like(z)), torch.zeros_like(r))
    norm = conv(torch.ones_like(x), w * w)
    t = torch.where(alive | (norm == 0), torch.zeros_like(r), r / (norm + rules.STABILIZER))
    return x_pos * back(w_pos, s) + x_neg * back(w_neg, s) + back(w * w, t)


def convolutions_run(fn):
    """(forward, backward) convolutions the operator profiler sees while ``fn`` runs, and its result.

    Backward convolutions are autograd's and the rules' back-projections (transposed convolutions)."""
    with torch.autograd.profiler.profile() as prof:
        out = fn()
    names = [event.name for event in prof.function_events]
    backward = names.count("aten::convolution_backward") + names.count("aten::conv_transpose2d")
    return (names.count("aten::conv2d"), backward), out


CASES = {
    "plain": dict(shape=(2, 4, 9, 9), weight=(6, 4, 3, 3), kwargs=dict(padding=1)),
    "strided": dict(shape=(2, 3, 10, 10), weight=(5, 3, 4, 4), kwargs=dict(stride=2, padding=1)),
    "depthwise": dict(shape=(2, 6, 8, 8), weight=(6, 1, 5, 5), kwargs=dict(padding=2, groups=6)),
    "dilated": dict(shape=(2, 2, 11, 11), weight=(3, 2, 3, 3), kwargs=dict(padding=2, dilation=2)),
}


def case(name, signed, seed=0):
    spec = CASES[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(spec["shape"], generator=g, dtype=torch.float64)
    x = x if signed else x.clamp(min=0)        # a ReLU's output: zeros but no negative entry
    w = torch.randn(spec["weight"], generator=g, dtype=torch.float64)
    # output channel 0 has only negative weights and image 0 only non-negative inputs:
    # those units have no positive contribution, so the w² part has work to do
    w[0] = -w[0].abs()
    x[0] = x[0].abs()
    out = conv2d(x, w, None, **spec["kwargs"])
    r = torch.randn(out.shape, generator=g, dtype=torch.float64)
    return x, w, r, spec["kwargs"]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("signed", [False, True], ids=["relu-input", "signed-input"])
def test_rule_equals_the_full_formula(name, signed):
    x, w, r, kwargs = case(name, signed)
    expected = full_zplus_wsquare(x, w, r, **kwargs)
    (forward, backward), got = convolutions_run(lambda: rules.conv2d_zplus_wsquare(x, w, r, **kwargs))
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    # relevance goes to the w² rule at dead units, so the total is kept up to ε's share
    assert torch.allclose(rules.per_sample_sum(got), rules.per_sample_sum(r), rtol=1e-6)
    # x⁻ terms run only for signed inputs (as extra input channels of the same convolution
    # unless it is grouped), and the w² part (one forward, one backward) because some units
    # have no positive contribution
    z_plus_convolutions = 2 if signed and kwargs.get("groups", 1) > 1 else 1
    assert forward == z_plus_convolutions + 1
    assert backward == z_plus_convolutions + 1


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("signed", [False, True], ids=["relu-input", "signed-input"])
def test_rule_on_channels_last_tensors_equals_the_contiguous_one(name, signed):
    # the CPU forward passes run NHWC; the rule works in the layout it is given
    x, w, r, kwargs = case(name, signed, seed=1)
    nhwc = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    expected = rules.conv2d_zplus_wsquare(x, w, r, **kwargs)
    got = rules.conv2d_zplus_wsquare(nhwc(x), w, nhwc(r), **kwargs)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))


def test_fallback_is_skipped_when_no_unit_is_dead():
    # all-positive inputs and weights: every z⁺ is positive
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 7, 7, generator=g, dtype=torch.float64) + 0.1
    w = torch.rand(4, 3, 3, 3, generator=g, dtype=torch.float64)
    r = torch.randn(2, 4, 7, 7, generator=g, dtype=torch.float64)
    (forward, backward), got = convolutions_run(lambda: rules.conv2d_zplus_wsquare(x, w, r, padding=1))
    assert (forward, backward) == (1, 1)
    assert torch.allclose(got, full_zplus_wsquare(x, w, r, padding=1), rtol=1e-12, atol=1e-15)


def test_fallback_is_skipped_when_dead_units_carry_no_relevance():
    x, w, r, kwargs = case("plain", signed=False, seed=4)
    dead = conv2d(x, w.clamp(min=0), None, **kwargs) == 0
    assert dead.any()
    r = r.masked_fill(dead, 0.0)
    (forward, backward), got = convolutions_run(lambda: rules.conv2d_zplus_wsquare(x, w, r, **kwargs))
    assert (forward, backward) == (1, 1)
    assert torch.equal(got, full_zplus_wsquare(x, w, r, **kwargs))


def test_fallback_by_hand_beside_a_live_unit_and_padding():
    """Two output units over a 1×3 input with a 1×2 kernel, padding 1 on each side.

    x = (1, 2, 0), w = (1, −1): outputs see (pad, 1), (1, 2), (2, 0), (0, pad).
    - unit 0: z⁺ = 1·(−1)⁺ → 0, dead; only the tap on x₀ sees an input: w² share (0, 1) → R₀ = 3 to x₀.
    - unit 1: z⁺ = 1·1 = 1 (x₁ w₁ = −2 is negative): alive, R₁ = 5 all to x₀.
    - unit 2: z⁺ = 2·1 = 2, R₂ = 7 to x₁.
    - unit 3: z⁺ = 0, dead, R₃ = 0: drops nothing.
    """
    x = torch.tensor([[[[1.0, 2.0, 0.0]]]], dtype=torch.float64)
    w = torch.tensor([[[[1.0, -1.0]]]], dtype=torch.float64)
    r = torch.tensor([[[[3.0, 5.0, 7.0, 0.0]]]], dtype=torch.float64)
    got = rules.conv2d_zplus_wsquare(x, w, r, padding=(0, 1))
    eps = rules.STABILIZER
    expected = torch.tensor([[[[3.0 * 1 / (1 + eps) + 5.0, 7.0, 0.0]]]], dtype=torch.float64)
    assert torch.allclose(got, expected, rtol=1e-15, atol=0)


def test_a_quotient_that_overflows_is_dropped_not_carried_as_inf():
    # float32: z⁺ = 1e-20 · 1e-19 = 1e-39 (subnormal, but not zero), so R / z⁺ = 1e39 overflows
    x = torch.tensor([1e-20, 1.0]).view(1, 1, 1, 2)
    w = torch.tensor([1e-19, 1.0]).view(2, 1, 1, 1)          # a 1×1 convolution to two channels
    r = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])
    got = rules.conv2d_zplus_wsquare(x, w, r)
    assert torch.isfinite(got).all()
    # the other unit's relevance is untouched; the overflowing one is lost rather than inf
    assert torch.equal(got, torch.tensor([[[[0.0, 2.0]]]]))


def test_strided_relevance_gives_the_same_result():
    # relevance arriving through a residual sum is a slice of a stacked tensor
    x, w, r, kwargs = case("plain", signed=True, seed=5)
    stacked = torch.stack([r, torch.randn_like(r)], dim=-1)[..., 0]
    assert not stacked.is_contiguous()
    assert torch.equal(rules.conv2d_zplus_wsquare(x, w, stacked, **kwargs), rules.conv2d_zplus_wsquare(x, w, r, **kwargs))


# -- the hooks ------------------------------------------------------------------------------------
class GradientThenReplace(BasicHook):
    """The same rule as a plain zennit hook: autograd computes the conv's gradient, then it is replaced."""

    def __init__(self):
        super().__init__()

    def backward(self, module, grad_input, grad_output):
        x = self.stored_tensors["input"][0].detach()
        relevance = ZPlusWSquare().relevance(module, x, grad_output[0])
        return tuple(relevance if g is not None and g.shape == relevance.shape else None for g in grad_input)

    def copy(self):
        return GradientThenReplace()


def small_net(inplace):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=inplace),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(inplace=inplace),
        nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ).eval().requires_grad_(False)


def relevance_with(net, layer_map, x, output_relevance=None):
    composite = LayerMapComposite(layer_map=layer_map)
    with Gradient(model=net, composite=composite) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True),
                                  (lambda out: out) if output_relevance is None else output_relevance)
    return relevance


@pytest.mark.parametrize("sum_type", [StackedSum, Sum])
@pytest.mark.parametrize("dim", [0, -1])
def test_sum_rule_equals_zennits_norm(sum_type, dim):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    b[0, 0] = -a[0, 0]                   # summands that cancel exactly: z = 0, the stabiliser alone
    a[1, 1], b[1, 1] = 0.0, -0.0         # z = ±0 with zero summands
    a[1, 2] = 1e-8                       # |z| below ε
    x = torch.stack([a, b], dim=dim)
    net = nn.Sequential(sum_type(dim=dim))
    output_relevance = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    expected = relevance_with(net, [(Sum, Norm(stabilizer=1e-6))], x, output_relevance)
    got = relevance_with(net, [(Sum, SumNorm(stabilizer=1e-6))], x, output_relevance)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)
    # by hand where the summands cancel: each gets its value times R / ε
    assert torch.allclose(got.select(dim, 0)[0, 0], a[0, 0] * output_relevance[0, 0] / 1e-6, rtol=1e-12, atol=0)


@pytest.mark.parametrize("inplace", [False, True], ids=["relu", "relu-inplace"])
def test_autograd_rules_equal_the_zennit_hooks_and_skip_the_plain_gradient(inplace):
    net = small_net(inplace)
    x = torch.randn(2, 3, 8, 8)
    zennit_hooks = [(Activation, Pass()), (BatchNorm, Pass()), (nn.Conv2d, GradientThenReplace())]
    ours = [(Activation, PassThrough()), (BatchNorm, PassThrough()), (nn.Conv2d, ZPlusWSquare())]
    (_, backward_zennit), expected = convolutions_run(lambda: relevance_with(net, zennit_hooks, x))
    (_, backward_ours), got = convolutions_run(lambda: relevance_with(net, ours, x))
    assert torch.equal(got, expected)
    # zennit's hooks also let autograd run one plain backward convolution per layer
    assert backward_zennit - backward_ours == 3


def test_inactive_composite_gives_the_plain_gradient_and_hooks_only_act_with_gradients():
    net = small_net(inplace=True)
    x = torch.randn(2, 3, 8, 8)
    plain = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(net(plain).sum(), plain)
    composite = make_composite("epsilon_plus_box", LOW + 0 * x, HIGH + 0 * x)
    with Gradient(model=net, composite=composite) as attributor:
        with composite.inactive():
            _, gradient = attributor(x.clone(), torch.ones_like)
        with torch.no_grad():
            logits = net(x)
    assert torch.allclose(gradient, expected, rtol=1e-5, atol=1e-6)
    # without gradients the hooks leave the forward pass alone (batch norm is folded: rounding)
    assert torch.allclose(logits, small_net(inplace=False)(x), rtol=1e-5, atol=1e-6)


def test_cnn_relevance_of_an_inplace_relu_net_equals_the_out_of_place_one():
    x = torch.randn(2, 3, 8, 8)
    rule = lambda out: out * torch.nn.functional.one_hot(out.argmax(1), 4)  # noqa: E731
    a, _ = cnn_relevance(small_net(inplace=True), x, rule, low=LOW, high=HIGH)
    b, _ = cnn_relevance(small_net(inplace=False), x, rule, low=LOW, high=HIGH)
    assert torch.equal(a, b)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("bounds_batch", [1, 2])
def test_zbox_rule_equals_zennits_and_back_projects_once(groups, bounds_batch):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2, padding=2, groups=groups), nn.Flatten()).double().eval()
    net.requires_grad_(False)
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    low = LOW.double().expand(bounds_batch, 3, 12, 12)
    high = HIGH.double().expand(bounds_batch, 3, 12, 12)
    theirs = [(nn.Conv2d, ZBox(low=low, high=high, stabilizer=1e-6, zero_params=["bias"]))]
    ours = [(nn.Conv2d, ZBoxConv2d(low=low, high=high, stabilizer=1e-6))]
    (_, backward_zennit), expected = convolutions_run(lambda: relevance_with(net, theirs, x))
    (_, backward_ours), got = convolutions_run(lambda: relevance_with(net, ours, x))
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    # zennit: the plain gradient and one back-projection per term; here the three terms go
    # through one transposed convolution with stacked weights (grouped: one each)
    assert backward_zennit == 4
    assert backward_ours == (1 if groups == 1 else 3)
