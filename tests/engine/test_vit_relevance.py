"""Relevance propagation through timm ViTs: conservation layer by layer, real architectures,
what is refused, and a model left exactly as it was."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer

from explain.core.hooks import count_hooks
from explain.core.relevance.vit import check_vit, propagate, trace_vit


def tiny_vit(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, num_classes=10, qkv_bias=True)
    config.update(kwargs)
    model = VisionTransformer(**config).eval()
    with torch.no_grad():   # timm initialises biases to zero: give them weight so conservation is tested with them
        for name, p in model.named_parameters():
            if name.endswith("bias") or "embed" in name or "token" in name:
                p.normal_(0, 0.5)
    return model


def logit_relevance(logits, targets):
    out = torch.zeros_like(logits)
    out[torch.arange(len(targets)), targets] = logits[torch.arange(len(targets)), targets]
    return out


def bounds():
    return torch.full((1, 3, 1, 1), -2.0), torch.full((1, 3, 1, 1), 2.0)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-7), (torch.float32, 1e-4)])
def test_relevance_is_conserved_at_every_block_and_at_the_input(dtype, rtol):
    model = tiny_vit(depth=4).to(dtype)
    x = torch.rand(3, 3, 32, 32, dtype=dtype) * 4 - 2
    trace = trace_vit(model, x)
    targets = torch.tensor([0, 4, 9])
    logits = trace.logits.detach()
    low, high = bounds()
    result = propagate(trace, logit_relevance(logits, targets), low=low.to(dtype), high=high.to(dtype))
    explained = logits[torch.arange(3), targets]
    totals = result.totals
    for level in ["pooled", "blocks_out", "block3", "block2", "block1", "block0"]:
        assert torch.allclose(totals[level], explained, rtol=rtol, atol=rtol), level
    at_input = totals["pixels"] + totals["pos_embed"] + totals["class_token"]
    assert torch.allclose(at_input, explained, rtol=rtol, atol=rtol)
    assert torch.allclose(result.pixels.sum(dim=(1, 2, 3)), totals["pixels"])
    # the patch tokens' relevance reaches the pixels whole (z^B conserves)
    assert torch.allclose(totals["pixels"], totals["patch_tokens"], rtol=rtol, atol=rtol)
    # and the split is not degenerate: the pixels get a real share
    assert (totals["pixels"].abs() > 1e-3 * explained.abs()).all()


def test_attention_relevance_is_half_of_the_attention_branch():
    """At ``A @ V`` the attention map gets exactly half of the relevance entering the product."""
    model = tiny_vit(depth=2).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    trace = trace_vit(model, x)
    one_hot = torch.zeros(2, 10, dtype=torch.float64)
    one_hot[:, 3] = 1
    result = propagate(trace, one_hot, to_pixels=False)
    assert result.pixels is None
    for block_relevance in result.attention:
        assert block_relevance.shape == (2, 4, 17, 17)
    # the last block: what enters A@V is the attention branch's relevance, all of it from the class token
    total_attention = result.attention[-1].sum(dim=(1, 2, 3))
    assert torch.all(total_attention.abs() > 0)
    assert torch.allclose(result.totals["logits"], torch.ones(2, dtype=torch.float64))


def test_real_vit_tiny_architecture_conserves_relevance_batched():
    """timm vit_tiny_patch16_224 (the ViT-B/16 family at width 192, 12 blocks, 3 heads), random
    weights, two images at 112 pixels (7×7 patches) to keep the test fast."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=20, img_size=112).eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    trace = trace_vit(model, x)
    assert torch.allclose(trace.logits, model(x), atol=1e-4)
    targets = torch.tensor([3, 11])
    logits = trace.logits.detach()
    result = propagate(trace, logit_relevance(logits, targets), low=torch.tensor(-1.0), high=torch.tensor(1.0))
    explained = logits[torch.arange(2), targets]
    for level in ["block11", "block5", "block0"]:
        assert torch.allclose(result.totals[level], explained, rtol=1e-3, atol=1e-4), level
    at_input = result.totals["pixels"] + result.totals["pos_embed"] + result.totals["class_token"]
    assert torch.allclose(at_input, explained, rtol=1e-3, atol=1e-4)
    assert result.pixels.shape == (2, 3, 112, 112)
    assert [a.shape for a in result.attention[:1]] == [(2, 3, 50, 50)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"global_pool": "avg"}, "class-token pooling"),
        ({"reg_tokens": 2}, "no register tokens"),
        ({"qk_norm": True}, "without q/k norm"),
        ({"no_embed_class": True}, "position embedding covering the class token"),
    ],
)
def test_unsupported_vits_are_refused_with_a_reason(kwargs, message):
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3, **kwargs)
    with pytest.raises(ValueError, match=message):
        check_vit(model)


def test_non_vit_is_refused():
    with pytest.raises(ValueError, match="needs a timm VisionTransformer"):
        trace_vit(torch.nn.Linear(3, 3), torch.rand(1, 3))


def test_model_is_left_as_it_was_even_when_the_forward_fails():
    model = tiny_vit()
    model.train()                 # a flag the trace must restore, not keep
    flags = [m.fused_attn for m in model.modules() if isinstance(m, Attention)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [p.grad for p in model.parameters()]
    trace = trace_vit(model, torch.rand(2, 3, 32, 32))
    trace.attention_gradients(torch.tensor([1, 2]))
    with pytest.raises(Exception):  # noqa: B017 - timm's own error type is not part of its API
        trace_vit(model, torch.rand(2, 3, 24, 24))   # wrong image size: timm's patch embedding raises
    assert [m.fused_attn for m in model.modules() if isinstance(m, Attention)] == flags
    assert count_hooks(model) == 0
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert [p.grad for p in model.parameters()] == grads_before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_trace_without_grad_builds_no_graph():
    model = tiny_vit()
    trace = trace_vit(model, torch.rand(1, 3, 32, 32), with_grad=False)
    assert trace.logits.grad_fn is None
    assert trace.blocks[0].attn.shape == (1, 4, 17, 17)
    assert torch.allclose(trace.blocks[0].attn.sum(-1), torch.ones(1, 4, 17))


def test_propagation_can_stop_at_a_block():
    model = tiny_vit(depth=3).double()
    trace = trace_vit(model, torch.rand(2, 3, 32, 32, dtype=torch.float64))
    one_hot = torch.zeros(2, 10, dtype=torch.float64)
    one_hot[:, 1] = 1
    full = propagate(trace, one_hot, to_pixels=False)
    last_only = propagate(trace, one_hot, to_pixels=False, down_to_block=2)
    assert last_only.attention[:2] == [None, None]
    assert torch.equal(last_only.attention[2], full.attention[2])
    assert "block1" not in last_only.totals and "block1" in full.totals
    with pytest.raises(ValueError, match=r"down_to_block must be in \[0, 2\]"):
        propagate(trace, one_hot, to_pixels=False, down_to_block=3)


def test_a_forward_that_skips_the_attention_hooks_is_reported():
    """If the attention maps are not recorded (here: the fused path forced back on inside the
    forward), the trace refuses instead of propagating with holes."""
    model = tiny_vit(depth=1)

    def force_fused(module, args):
        module.fused_attn = True

    handle = model.blocks[0].attn.register_forward_pre_hook(force_fused)
    try:
        with pytest.raises(ValueError, match="nothing for"):
            trace_vit(model, torch.rand(1, 3, 32, 32))
    finally:
        handle.remove()


def test_no_leak_over_many_calls():
    from explain.core.methods.transformer_attribution import TransformerAttribution
    from explain.core.handle import Classifier

    model = tiny_vit(depth=1, embed_dim=16, num_heads=2)
    clf = Classifier(name="leak", module=model, family="vit", class_names=tuple("abcdefghij"),
                     default_layers={"tokens": "blocks.0.norm1"}, input_size=32, resize_size=32)
    method = TransformerAttribution()
    params = method.resolve_params(clf)
    x = torch.rand(2, 3, 32, 32)
    flags = [m.fused_attn for m in model.modules() if isinstance(m, Attention)]
    first = method.attribute(clf, x, torch.tensor([1, 2]), params, None)
    for _ in range(300):
        last = method.attribute(clf, x, torch.tensor([1, 2]), params, None)
    assert count_hooks(model) == 0
    assert [m.fused_attn for m in model.modules() if isinstance(m, Attention)] == flags
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(first, last)
