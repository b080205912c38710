"""The shortcuts of ViT relevance propagation give the maps of the plain rules.

:mod:`explain.core.relevance.vit` saves work: the z⁺ rule reuses each linear layer's recorded
output, ``A @ V`` is not recomputed, the last block propagates the class token's row only, a
propagation that stops at the attention skips the lowest block's ``qkv`` and ``Q Kᵀ`` rules,
and z^B at the patch embedding runs as matrix products. Each is checked here against the plain
rule functions of :mod:`explain.core.relevance.rules`, composed block by block as the
propagation was before the shortcuts, on small float64 ViTs with biases everywhere.
"""
from __future__ import annotations

import pytest
import torch

from explain.core.relevance import rules
from explain.core.relevance.vit import (
    ZPLUS_TRUST,
    _patch_embedding_zbox,
    linear_zplus,
    propagate,
    trace_vit,
)

from .test_vit_relevance import tiny_vit as relevance_tiny_vit


def tiny_vit(seed=0, **kwargs):
    """The relevance tests' tiny ViT (biases given weight) in float64."""
    return relevance_tiny_vit(seed, **kwargs).double()


# -- the plain composition of the rules (no shortcut) -----------------------------------------
def plain_block(block, rec, relevance, alpha):
    b, n, dim = rec.x_in.shape
    heads, head_dim = block.attn.num_heads, block.attn.head_dim
    x_mid = rec.x_in + rec.branch1
    r_mid, r_branch = rules.add_normalized(x_mid, rec.branch2, relevance)
    r_hidden = rules.linear_alpha_beta(rec.hidden, block.mlp.fc2.weight, r_branch, alpha)
    r_mid = r_mid + rules.linear_alpha_beta(rec.normed2, block.mlp.fc1.weight, r_hidden, alpha)
    r_in, r_branch = rules.add_normalized(rec.x_in, rec.branch1, r_mid)
    r_out = rules.linear_alpha_beta(rec.attn_out, block.attn.proj.weight, r_branch, alpha)
    r_out = r_out.reshape(b, n, heads, head_dim).transpose(1, 2)
    q, k, v = rec.qkv.reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    r_attn, r_v = rules.matmul_z(rec.attn, v, r_out)
    r_q, r_kt = rules.matmul_z(q, k.transpose(-1, -2), r_attn)
    r_qkv = torch.stack([r_q, r_kt.transpose(-1, -2), r_v]).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * dim)
    return r_in + rules.linear_alpha_beta(rec.normed1, block.attn.qkv.weight, r_qkv, alpha), r_attn


def plain_propagate(trace, output_relevance, low, high, alpha=1.0):
    """Every rule on every token, the patch embedding through ``rules.conv2d_zbox``."""
    model = trace.model
    with torch.no_grad():
        r_pooled = rules.linear_alpha_beta(trace.pooled, model.head.weight, output_relevance, alpha)
        relevance = torch.zeros_like(trace.blocks[-1].x_in)
        relevance[:, 0] = r_pooled
        attention = [None] * len(trace.blocks)
        for index in reversed(range(len(trace.blocks))):
            relevance, attention[index] = plain_block(model.blocks[index], trace.blocks[index], relevance, alpha)
        b = relevance.shape[0]
        embedded = torch.cat([model.cls_token.expand(b, -1, -1), trace.patch_tokens], dim=1)
        r_embedded, _ = rules.add_normalized(embedded, model.pos_embed, relevance)
        proj = model.patch_embed.proj
        x = trace.pixels.detach()
        grid = proj(x).shape[-2:]
        r_conv = r_embedded[:, 1:].transpose(1, 2).reshape(b, -1, *grid)
        pixels = rules.conv2d_zbox(x, proj.weight, r_conv, low, high, stride=proj.stride)
    return pixels, attention


def logit_relevance(logits, targets):
    out = torch.zeros_like(logits)
    out[torch.arange(len(targets)), targets] = logits[torch.arange(len(targets)), targets]
    return out


def close(a, b, tol=1e-10):
    scale = float(b.abs().max())
    assert scale > 0
    assert torch.allclose(a, b, rtol=0, atol=tol * scale), f"max difference {float((a - b).abs().max()):.3g} of {scale:.3g}"


# -- the linear rule ------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False])
def test_zplus_with_the_recorded_output_equals_the_four_product_rule(with_bias):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, dtype=torch.float64)          # signed inputs, batch and token dimensions
    weight = torch.randn(6, 7, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64) if with_bias else None
    output = torch.nn.functional.linear(x, weight, bias)
    relevance = torch.randn(3, 5, 6, dtype=torch.float64)  # signed relevance, as deeper in a ViT
    ours = linear_zplus(x, weight, bias, output, relevance)
    expected = rules.linear_alpha_beta(x, weight, relevance, 1.0)
    close(ours, expected, 1e-12)
    # and against the definition, contribution by contribution
    # (dead units, every contribution negative, occur with 7 inputs: their relevance is dropped)
    contributions = (x.unsqueeze(-1) * weight.T).clamp(min=0)            # 3×5×7×6: (x_i w_ij)⁺
    z_plus = contributions.sum(dim=-2, keepdim=True)
    assert bool((z_plus == 0).any())
    share = torch.where(z_plus > 0, contributions / z_plus, torch.zeros_like(contributions))
    by_hand = (share * relevance.unsqueeze(-2)).sum(dim=-1)
    close(ours, by_hand, 1e-8)


def test_zplus_takes_doubtful_and_dead_units_out_of_the_shortcut():
    """Unit 0 has only negative contributions (z⁺ = 0: its relevance is dropped, not blown up by a
    rounding residue of ``|x||w| + z``); unit 1 has one tiny positive contribution beside large
    negative ones, below ``ZPLUS_TRUST``, where float32 cancellation would ruin the shortcut."""
    x = torch.tensor([[1.0, -2.0, 3.0, -0.5]])
    weight = torch.tensor([
        [-1.0, 0.7, -0.3, 2.0],          # every x_i w_ij < 0
        [-50.0, 40.0, 1e-4, 30.0],       # z⁺ = 3e-4, |x||w| ≈ 145
        [0.5, -0.25, 0.2, 0.1],          # an ordinary unit
    ])
    bias = torch.tensor([0.3, -7.0, 1.0])
    output = torch.nn.functional.linear(x, weight, bias)
    relevance = torch.tensor([[2.0, 1.5, -0.5]])
    magnitude = x.abs() @ weight.abs().T
    z_plus = (magnitude + output - bias) / 2
    assert bool((z_plus[0, :2] < ZPLUS_TRUST * magnitude[0, :2]).all())
    ours = linear_zplus(x, weight, bias, output, relevance)
    expected = rules.linear_alpha_beta(x.double(), weight.double(), relevance.double(), 1.0)
    assert torch.allclose(ours.double(), expected, rtol=1e-5, atol=1e-6)
    # unit 1's 1.5 reaches the one input with a positive contribution, unit 2's -0.5 is split over its own
    assert float(ours.sum()) == pytest.approx(1.5 - 0.5, rel=1e-5)


# -- the propagation ------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 2.0])
@pytest.mark.parametrize("init_values", [None, 0.7], ids=["plain", "layerscale"])
def test_propagation_equals_the_plain_rules(alpha, init_values):
    model = tiny_vit(seed=1, init_values=init_values)
    torch.manual_seed(2)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 4 - 2
    trace = trace_vit(model, x)
    relevance = logit_relevance(trace.logits.detach(), torch.tensor([3, 8]))
    low = torch.tensor([-2.0, -1.5, -2.5], dtype=torch.float64).view(1, 3, 1, 1)
    high = torch.tensor([2.0, 2.5, 1.5], dtype=torch.float64).view(1, 3, 1, 1)
    result = propagate(trace, relevance, low=low, high=high, alpha=alpha)
    pixels, attention = plain_propagate(trace, relevance, low, high, alpha)
    close(result.pixels, pixels)
    for ours, expected in zip(result.attention, attention):
        close(ours, expected)


def test_a_layernorm_before_proj_is_propagated_through_as_before():
    """timm's ``scale_attn_norm``/``scale_mlp_norm`` put a LayerNorm between ``A @ V`` and ``proj``
    (and between GELU and ``fc2``): the ``A @ V`` rule then recomputes the product instead of
    reading it from ``proj``'s input."""
    model = tiny_vit(seed=9, depth=2, scale_attn_norm=True, scale_mlp_norm=True)
    trace = trace_vit(model, torch.rand(2, 3, 32, 32, dtype=torch.float64))
    relevance = logit_relevance(trace.logits.detach(), torch.tensor([2, 5]))
    low, high = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    result = propagate(trace, relevance, low=low, high=high)
    pixels, attention = plain_propagate(trace, relevance, low, high)
    close(result.pixels, pixels)
    for ours, expected in zip(result.attention, attention):
        close(ours, expected)


def test_the_last_block_spreads_relevance_from_the_class_token_only():
    """The head reads the class token only, so the last block's attention relevance is zero outside
    row 0, and the shortcut that computes row 0 alone gives the full rule's matrix."""
    model = tiny_vit(seed=5, depth=2)
    trace = trace_vit(model, torch.rand(2, 3, 32, 32, dtype=torch.float64))
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 6]), 10).double()
    result = propagate(trace, one_hot, to_pixels=False)
    _, attention = plain_propagate(trace, one_hot, torch.tensor(0.0), torch.tensor(1.0))
    last = result.attention[-1]
    assert torch.count_nonzero(last[:, :, 1:]) == 0
    assert torch.count_nonzero(last[:, :, 0]) > 0
    close(last, attention[-1])
    close(result.attention[0], attention[0])


@pytest.mark.parametrize("down_to_block", [0, 1, 2])
def test_stopping_at_the_attention_gives_the_full_propagations_attention(down_to_block):
    model = tiny_vit(seed=3, init_values=0.5)
    trace = trace_vit(model, torch.rand(3, 3, 32, 32, dtype=torch.float64))
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 4, 9]), 10).double()
    full = propagate(trace, one_hot, low=torch.tensor(0.0), high=torch.tensor(1.0))
    partial = propagate(trace, one_hot, to_pixels=False, down_to_block=down_to_block)
    assert partial.pixels is None
    assert partial.attention[:down_to_block] == [None] * down_to_block
    for index in range(down_to_block, 3):
        close(partial.attention[index], full.attention[index], 1e-12)
    # the lowest block's input relevance is not computed; the ones above it are the full run's
    assert f"block{down_to_block}" not in partial.totals
    for index in range(down_to_block + 1, 3):
        assert torch.allclose(partial.totals[f"block{index}"], full.totals[f"block{index}"], rtol=1e-12)


def test_trace_records_the_linear_outputs_the_shortcut_uses():
    model = tiny_vit(seed=4, depth=2, init_values=0.8)
    trace = trace_vit(model, torch.rand(2, 3, 32, 32, dtype=torch.float64), with_grad=False)
    with torch.no_grad():
        for block, rec in zip(model.blocks, trace.blocks):
            assert torch.allclose(rec.fc1_out, block.mlp.fc1(rec.normed2))
            assert torch.allclose(rec.hidden, block.mlp.act(rec.fc1_out))
            assert torch.allclose(rec.fc2_out, block.mlp.fc2(rec.hidden))
            assert torch.allclose(rec.proj_out, block.attn.proj(rec.attn_out))
            assert torch.allclose(rec.branch1, block.ls1(rec.proj_out))   # LayerScale comes after proj
        assert torch.allclose(trace.patch_conv, model.patch_embed.proj(trace.pixels))


# -- z^B at the patch embedding -----------------------------------------------------------------
@pytest.mark.parametrize("bounds", ["per_channel", "per_image", "scalar", "per_pixel"])
def test_patch_embedding_zbox_equals_the_convolution_rule(bounds):
    torch.manual_seed(6)
    conv = torch.nn.Conv2d(3, 5, kernel_size=4, stride=4).double()
    x = torch.rand(2, 3, 12, 8, dtype=torch.float64) * 2 - 1            # non-square grid: 3×2 patches
    low, high = {
        "per_channel": (torch.tensor([-1.0, -1.2, -1.1]).view(1, 3, 1, 1), torch.tensor([1.0, 1.3, 1.1]).view(1, 3, 1, 1)),
        "per_image": (x.amin(dim=(1, 2, 3)).view(2, 1, 1, 1), x.amax(dim=(1, 2, 3)).view(2, 1, 1, 1)),
        "scalar": (torch.tensor(-1.0), torch.tensor(1.0)),
        "per_pixel": (x - torch.rand_like(x), x + torch.rand_like(x)),
    }[bounds]
    low, high = low.double(), high.double()
    conv_out = conv(x).detach()
    relevance = torch.randn_like(conv_out)
    ours = _patch_embedding_zbox(conv, x, conv_out, relevance, low, high)
    expected = rules.conv2d_zbox(x, conv.weight.detach(), relevance, low, high, stride=4)
    close(ours, expected)


def test_overlapping_patch_embedding_goes_to_the_convolution_rule():
    torch.manual_seed(7)
    conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1).double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    conv_out = conv(x).detach()
    relevance = torch.rand_like(conv_out)
    low, high = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    ours = _patch_embedding_zbox(conv, x, conv_out, relevance, low, high)
    expected = rules.conv2d_zbox(x, conv.weight.detach(), relevance, low, high, stride=2, padding=1)
    close(ours, expected, 1e-14)
