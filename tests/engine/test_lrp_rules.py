"""The relevance rules of explain.core.relevance.rules on cases small enough to compute by hand."""
from __future__ import annotations

import pytest
import torch

from explain.core.relevance import rules


def test_linear_alpha1_beta0_gives_each_positive_contribution_its_share():
    # x = (1, −2), w = (2, 1): contributions z = (2, −2); only the first is positive.
    x = torch.tensor([[1.0, -2.0]])
    w = torch.tensor([[2.0, 1.0]])
    r = rules.linear_alpha_beta(x, w, torch.tensor([[3.0]]), alpha=1)
    assert torch.allclose(r, torch.tensor([[3.0, 0.0]]))


def test_linear_alpha2_beta1_charges_the_negative_contribution():
    x = torch.tensor([[1.0, -2.0]])
    w = torch.tensor([[2.0, 1.0]])
    r = rules.linear_alpha_beta(x, w, torch.tensor([[3.0]]), alpha=2)
    # 2·(3, 0) − 1·(0, 3)
    assert torch.allclose(r, torch.tensor([[6.0, -3.0]]))
    assert torch.allclose(r.sum(), torch.tensor(3.0))


def test_linear_alpha_below_one_is_refused():
    with pytest.raises(ValueError, match="alpha must be >= 1"):
        rules.linear_alpha_beta(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 1), alpha=0.5)


def test_linear_rule_conserves_and_drops_only_dead_outputs():
    torch.manual_seed(0)
    x, w, r = torch.randn(4, 7, 6), torch.randn(5, 6), torch.randn(4, 7, 5)
    out = rules.linear_alpha_beta(x, w, r)
    # with 6 inputs, about 1 output in 64 has only negative contributions: its relevance is lost
    alive = (x.clamp(min=0) @ w.clamp(min=0).T + x.clamp(max=0) @ w.clamp(max=0).T) > 0
    assert not alive.all()
    assert torch.allclose(rules.per_sample_sum(out), rules.per_sample_sum(r * alive), rtol=1e-5, atol=1e-5)
    # an output whose every contribution is negative cannot pass relevance on
    dead = rules.linear_alpha_beta(torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, -1.0]]), torch.tensor([[5.0]]))
    assert torch.equal(dead, torch.zeros(1, 2))


def test_add_normalized_matches_the_hand_computation():
    # a = (1, 3), b = (−2, 2), R = (1, 1): z-rule gives R_a = (−1, 0.6), R_b = (2, 0.4);
    # shares 0.4/2.8 = 1/7 and 2.4/2.8 = 6/7 of the total 2 → rescale by (2/7)/(−0.4), (12/7)/2.4.
    a = torch.tensor([[1.0, 3.0]])
    b = torch.tensor([[-2.0, 2.0]])
    r_a, r_b = rules.add_normalized(a, b, torch.tensor([[1.0, 1.0]]))
    assert torch.allclose(r_a, torch.tensor([[5 / 7, -3 / 7]]))
    assert torch.allclose(r_b, torch.tensor([[10 / 7, 2 / 7]]))


def test_add_normalized_sums_per_image_not_over_the_batch():
    torch.manual_seed(1)
    a, b, r = torch.randn(3, 4, 5), torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    r_a, r_b = rules.add_normalized(a, b, r)
    assert torch.allclose(rules.per_sample_sum(r_a + r_b), rules.per_sample_sum(r), atol=1e-5)
    one_a, one_b = rules.add_normalized(a[1:2], b[1:2], r[1:2])
    assert torch.allclose(one_a, r_a[1:2]) and torch.allclose(one_b, r_b[1:2])


def test_add_normalized_broadcasts_a_constant_operand():
    a = torch.randn(2, 3, 4)
    pos = torch.randn(1, 3, 4)
    r = torch.randn(2, 3, 4)
    r_a, r_b = rules.add_normalized(a, pos, r)
    assert r_b.shape == (2, 3, 4)
    assert torch.allclose(rules.per_sample_sum(r_a + r_b), rules.per_sample_sum(r), atol=1e-5)


def test_matmul_halves_the_z_rule_of_each_operand():
    a = torch.tensor([[[1.0, 2.0]]])        # 1×1×2
    b = torch.tensor([[[3.0], [4.0]]])      # 1×2×1, Z = 11
    r_a, r_b = rules.matmul_z(a, b, torch.tensor([[[11.0]]]))
    assert torch.allclose(r_a, torch.tensor([[[1.5, 4.0]]]))
    assert torch.allclose(r_b, torch.tensor([[[1.5], [4.0]]]))


def test_zbox_matches_the_hand_computation():
    # w = (1, −1), x = (0.5, 0.5), bounds [−1, 1]: per input x w − l w⁺ − h w⁻ = (1.5, 0.5), z = 2
    x = torch.tensor([[[[0.5, 0.5]]]])
    w = torch.tensor([[[[1.0, -1.0]]]])
    r = rules.conv2d_zbox(x, w, torch.tensor([[[[4.0]]]]), torch.tensor(-1.0), torch.tensor(1.0))
    assert torch.allclose(r, torch.tensor([[[[3.0, 1.0]]]]))


def test_zbox_conserves_on_a_strided_multichannel_convolution():
    torch.manual_seed(2)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    w = torch.randn(4, 3, 4, 4)
    r = torch.rand(2, 4, 2, 2)
    out = rules.conv2d_zbox(x, w, r, torch.tensor(-1.0), torch.tensor(1.0), stride=4)
    assert out.shape == x.shape
    assert torch.allclose(rules.per_sample_sum(out), rules.per_sample_sum(r), rtol=1e-5)


def test_zplus_wsquare_uses_zplus_where_it_can():
    x = torch.tensor([[[[1.0, 2.0]]]])
    w = torch.tensor([[[[1.0, 1.0]]]])
    r = rules.conv2d_zplus_wsquare(x, w, torch.tensor([[[[3.0]]]]))
    assert torch.allclose(r, torch.tensor([[[[1.0, 2.0]]]]))


def test_zplus_wsquare_falls_back_to_squared_weights_for_dead_units():
    # every contribution negative: z⁺ = 0, so the relevance 5 goes by w² = (1, 4)
    x = torch.tensor([[[[1.0, 1.0]]]])
    w = torch.tensor([[[[-1.0, -2.0]]]])
    r = rules.conv2d_zplus_wsquare(x, w, torch.tensor([[[[5.0]]]]))
    assert torch.allclose(r, torch.tensor([[[[1.0, 4.0]]]]))


def test_zplus_wsquare_leaves_padding_taps_out_of_the_fallback():
    # one input pixel, 3×3 kernel with padding 1: only the centre tap sees an input
    x = torch.tensor([[[[-1.0]]]])
    w = torch.full((1, 1, 3, 3), 1.0)
    r = rules.conv2d_zplus_wsquare(x, w, torch.tensor([[[[2.0]]]]), padding=1)
    assert torch.allclose(r, torch.tensor([[[[2.0]]]]))


def test_zplus_wsquare_drops_a_dead_unit_whose_seen_weights_are_all_zero():
    # one input pixel; only the kernel's corner is non-zero, and it falls on padding: the unit
    # is dead (z⁺ = 0) and its w² over the taps that see an input is 0, so its relevance has
    # nowhere to go and is dropped, not turned into inf or NaN
    x = torch.tensor([[[[1.0]]]])
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 0, 0] = -1.0
    r = rules.conv2d_zplus_wsquare(x, w, torch.tensor([[[[2.0]]]]), padding=1)
    assert torch.equal(r, torch.zeros(1, 1, 1, 1))


def test_safe_divide_zeroes_zero_denominators():
    out = rules.safe_divide(torch.tensor([1.0, 1.0, -2.0]), torch.tensor([0.0, 2.0, -4.0]))
    assert out[0] == 0
    assert torch.allclose(out[1:], torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("eps", [0.0, 1e-9, 0.25])
def test_safe_divide_gives_the_numbers_of_the_where_formula(eps):
    torch.manual_seed(8)
    denominator = torch.randn(4, 6)
    denominator[0, :3] = 0.0
    denominator[1, :2] = -0.0
    numerator = torch.randn(4, 6)
    ours = rules.safe_divide(numerator, denominator, eps)
    # the definition written out: ± eps with the denominator's sign, 0 where it is 0
    sign = torch.where(denominator >= 0, 1.0, -1.0)
    expected = torch.where(denominator == 0, torch.zeros_like(numerator), numerator / (denominator + eps * sign))
    assert torch.equal(torch.isfinite(ours), torch.isfinite(expected))
    finite = torch.isfinite(expected)
    assert torch.equal(ours[finite], expected[finite])
    assert bool((ours[:2, :2] == 0).all())


@pytest.mark.parametrize("size, channels, out, kernel, stride, padding, dilation, groups", [
    ((9, 9), 4, 6, 3, 1, 1, 1, 1),
    ((9, 10), 4, 6, 3, 2, 1, 1, 1),             # odd height, stride 2: a trailing row is dropped
    ((11, 8), 6, 6, (3, 1), (2, 1), (1, 0), 1, 6),   # depthwise, non-square kernel and stride
    ((12, 12), 4, 8, 3, 2, 2, 2, 2),            # dilated, grouped
    ((7, 7), 3, 5, 7, 2, 3, 1, 1),              # ResNet's stem geometry, small
    ((8, 8), 4, 4, 3, 1, "same", 1, 1),         # string padding: the autograd route
])
def test_conv2d_back_is_the_gradient_of_the_convolution(size, channels, out, kernel, stride, padding, dilation, groups):
    # c = Σ_j w_ij s_j is ∂(Σ_j z_j s_j)/∂x: compare with autograd through the forward convolution
    g = torch.Generator().manual_seed(3)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(2, channels, *size, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out, channels // groups, kh, kw, generator=g, dtype=torch.float64)
    z = torch.nn.functional.conv2d(x, w, None, stride, padding, dilation, groups)
    s = torch.randn(z.shape, generator=g, dtype=torch.float64)
    (expected,) = torch.autograd.grad((z * s).sum(), x)
    got = rules.conv2d_back(x.shape, w, s, stride, padding, dilation, groups)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
