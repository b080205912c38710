"""ViT relevance methods against a deliberately plain reference, and rollout by hand.

The reference below recomputes a timm ``VisionTransformer`` from its weights one image at a
time, with explicit patch loops, per-head loops and matrices (no hooks, no timm forward),
and propagates relevance with autograd's gradient-times-input form of each rule instead of
the closed-form matrix products of :mod:`explain.core.relevance.rules`. The methods must
agree with it to float64 rounding (with the rules' 1e-9 denominator stabiliser turned off) on
small random ViTs with non-trivial weights (biases,
LayerScale, peaked attention).

Agreement with the authors' code (hila-chefer/Transformer-Explainability, ``ViT_LRP.py``, run
outside this repository on the same float64 weights, 3 random ViTs from 32 px/3 blocks to
224 px/6 blocks, 3 images each, maximum difference relative to the map's maximum):
Transformer Attribution ≤ 1e-5, partial LRP ("last_layer") ≤ 5e-7, full LRP with per-image
input bounds ≤ 5e-4, attention rollout (up to the constant factor 2^B of its unnormalised
rows) ≤ 1e-15. Replacing the reference's ``Clone`` relevance (which divides by the
stabilised input and multiplies back) by an exact sum and using the same stabilised division
brings all of them to ≤ 5e-9.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from explain.core.engine import explain
from explain.core.handle import Classifier
from explain.core.methods.attention_rollout import AttentionRollout
from explain.core.methods.gradient_rollout import GradientRollout
from explain.core.methods.lrp import LRP
from explain.core.methods.partial_lrp import PartialLRP
from explain.core.methods.transformer_attribution import TransformerAttribution
from explain.core.relevance import rules

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def make_vit(seed=0, img=32, patch=8, dim=48, depth=3, heads=3, classes=10, init_values=None):
    """A small timm ViT whose parameters are re-drawn so that attention is peaked and biases matter."""
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
        num_classes=classes, init_values=init_values, qkv_bias=True,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in name and "token" not in name:
                p.normal_(0, 1.5 / math.sqrt(p.shape[-1] if p.dim() == 2 else p[0].numel()))
            elif name.endswith("gamma"):
                p.uniform_(0.5, 1.5)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.2)
            else:
                p.normal_(0, 0.3)
    return model.double().eval()


def classifier_for(model, img=32) -> Classifier:
    return Classifier(
        name="tiny-vit", module=model, family="vit",
        class_names=tuple(f"c{i}" for i in range(model.num_classes)),
        default_layers={"tokens": f"blocks.{len(model.blocks) - 1}.norm1"},
        mean=MEAN, std=STD, input_size=img, resize_size=img,
    )


# -- the reference ----------------------------------------------------------------------------
def ref_forward(model, image):
    """Per-image ViT forward from the weights: returns logits and what the rules need."""
    proj = model.patch_embed.proj
    p = proj.kernel_size[0]
    _, height, width = image.shape
    rows, cols = height // p, width // p
    patches = torch.stack([
        image[:, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1) for i in range(rows) for j in range(cols)
    ])                                                             # Np×(3·p·p), row-major grid order
    w_patch = proj.weight.reshape(proj.weight.shape[0], -1)
    tokens = patches @ w_patch.T + proj.bias
    embedded = torch.cat([model.cls_token[0], tokens])
    z = embedded + model.pos_embed[0]
    blocks = []
    for blk in model.blocks:
        rec = {"x_in": z}
        dim = z.shape[-1]
        heads, hd = blk.attn.num_heads, blk.attn.head_dim
        u = F.layer_norm(z, (dim,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
        qkv = u @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv[:, :dim], qkv[:, dim:2 * dim], qkv[:, 2 * dim:]
        attn, outs, qs, ks, vs = [], [], [], [], []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            a = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(hd), dim=-1)
            attn.append(a)
            qs.append(q[:, sl]), ks.append(k[:, sl]), vs.append(v[:, sl])
            outs.append(a @ v[:, sl])
        o = torch.cat(outs, dim=1)
        b1 = o @ blk.attn.proj.weight.T + blk.attn.proj.bias
        if hasattr(blk.ls1, "gamma"):
            b1 = b1 * blk.ls1.gamma
        mid = z + b1
        u2 = F.layer_norm(mid, (dim,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
        hidden = F.gelu(u2 @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
        b2 = hidden @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
        if hasattr(blk.ls2, "gamma"):
            b2 = b2 * blk.ls2.gamma
        z = mid + b2
        rec.update(u=u, attn=attn, q=qs, k=ks, v=vs, o=o, b1=b1, mid=mid, u2=u2, hidden=hidden, b2=b2)
        blocks.append(rec)
    final = F.layer_norm(z, (z.shape[-1],), model.norm.weight, model.norm.bias, model.norm.eps)
    logits = final[0] @ model.head.weight.T + model.head.bias
    return logits, {"patches": patches, "embedded": embedded, "blocks": blocks, "pooled": final[0], "grid": (rows, cols)}


def _div(r, z):
    return torch.where(z == 0, torch.zeros_like(r), r / torch.where(z == 0, torch.ones_like(z), z))


def ref_linear(x, weight, r):
    """α1β0 via autograd: positive contributions x⁺w⁺ + x⁻w⁻ share the output relevance."""
    xp = x.detach().clamp(min=0).requires_grad_(True)
    xn = x.detach().clamp(max=0).requires_grad_(True)
    z = xp @ weight.detach().clamp(min=0).T + xn @ weight.detach().clamp(max=0).T
    gp, gn = torch.autograd.grad(z, (xp, xn), _div(r, z.detach()))
    return xp.detach() * gp + xn.detach() * gn


def ref_product(a, b, r):
    """z-rule for a @ b via autograd, each operand halved."""
    a = a.detach().requires_grad_(True)
    b = b.detach().requires_grad_(True)
    z = a @ b
    ga, gb = torch.autograd.grad(z, (a, b), _div(r, z.detach()))
    return a.detach() * ga / 2, b.detach() * gb / 2


def ref_add(a, b, r):
    a, b = a.detach(), b.detach()
    ra, rb = a * _div(r, a + b), b * _div(r, a + b)
    sa, sb = ra.sum(), rb.sum()
    share_a = sa.abs() / (sa.abs() + sb.abs())
    return ra * share_a * r.sum() / sa, rb * (1 - share_a) * r.sum() / sb


def ref_relevance(model, image, output_relevance, low, high):
    """Per-image propagation: relevance at every attention head of every block, and at the pixels."""
    logits, rec = ref_forward(model, image)
    r = ref_linear(rec["pooled"], model.head.weight, output_relevance)
    r_tokens = torch.zeros_like(rec["blocks"][-1]["x_in"])
    r_tokens[0] = r
    attn_rel = [None] * len(model.blocks)
    for index in reversed(range(len(model.blocks))):
        blk, b = model.blocks[index], rec["blocks"][index]
        r_mid, r_b2 = ref_add(b["mid"], b["b2"], r_tokens)
        r_hidden = ref_linear(b["hidden"], blk.mlp.fc2.weight, r_b2)
        r_mid = r_mid + ref_linear(b["u2"], blk.mlp.fc1.weight, r_hidden)
        r_x, r_b1 = ref_add(b["x_in"], b["b1"], r_mid)
        r_o = ref_linear(b["o"], blk.attn.proj.weight, r_b1)
        hd = blk.attn.head_dim
        per_head, r_q, r_k, r_v = [], [], [], []
        for h in range(blk.attn.num_heads):
            r_a, r_vh = ref_product(b["attn"][h], b["v"][h], r_o[:, h * hd:(h + 1) * hd])
            per_head.append(r_a)
            r_qh, r_kth = ref_product(b["q"][h], b["k"][h].T, r_a)
            r_q.append(r_qh), r_k.append(r_kth.T), r_v.append(r_vh)
        attn_rel[index] = torch.stack(per_head)
        r_qkv = torch.cat([torch.cat(r_q, 1), torch.cat(r_k, 1), torch.cat(r_v, 1)], dim=1)
        r_tokens = r_x + ref_linear(b["u"], blk.attn.qkv.weight, r_qkv)
    r_embedded, _ = ref_add(rec["embedded"], model.pos_embed[0], r_tokens)
    # z^B on each patch: contributions x w − l w⁺ − h w⁻ of the patch's pixels
    w = model.patch_embed.proj.weight.reshape(model.patch_embed.proj.weight.shape[0], -1).detach()
    p = model.patch_embed.proj.kernel_size[0]
    x = rec["patches"].detach()
    lo = low.view(3, 1).expand(3, p * p).reshape(-1)
    hi = high.view(3, 1).expand(3, p * p).reshape(-1)
    z = x @ w.T - lo @ w.clamp(min=0).T - hi @ w.clamp(max=0).T
    s = _div(r_embedded[1:], z)
    r_patch = x * (s @ w) - lo * (s @ w.clamp(min=0)) - hi * (s @ w.clamp(max=0))
    rows, cols = rec["grid"]
    pixels = torch.zeros_like(image)
    for n in range(rows * cols):
        i, j = divmod(n, cols)
        pixels[:, i * p:(i + 1) * p, j * p:(j + 1) * p] = r_patch[n].reshape(3, p, p)
    return logits, rec, attn_rel, pixels


def one_hot(classes, target, scale=1.0):
    out = torch.zeros(classes, dtype=torch.float64)
    out[target] = scale
    return out


def ref_maps(model, image, target, low, high):
    """Every method's map for one image, from the reference (each ``g×g``)."""
    image = image.detach().clone().requires_grad_(True)
    logits, rec = ref_forward(model, image)
    grads = torch.autograd.grad(logits[target], [a for b in rec["blocks"] for a in b["attn"]])
    heads = len(rec["blocks"][0]["attn"])
    grads = [torch.stack(grads[i * heads:(i + 1) * heads]) for i in range(len(rec["blocks"]))]
    attns = [torch.stack(b["attn"]).detach() for b in rec["blocks"]]
    n = attns[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    rows, cols = rec["grid"]

    def chain(mats):
        out = mats[0]
        for m in mats[1:]:
            out = m @ out
        return out[0, 1:].reshape(rows, cols)

    _, _, rel, _ = ref_relevance(model, image.detach(), one_hot(model.num_classes, target), low, high)
    _, _, _, pixels = ref_relevance(
        model, image.detach(), one_hot(model.num_classes, target, logits[target].item()), low, high
    )
    rollout = []
    for a in attns:
        m = a.mean(0) + eye
        rollout.append(m / m.sum(1, keepdim=True))
    return {
        "transformer_attribution": chain([eye + (g * r).clamp(min=0).mean(0) for g, r in zip(grads, rel)]),
        "partial_lrp": rel[-1].clamp(min=0).mean(0)[0, 1:].reshape(rows, cols),
        "attention_rollout": chain(rollout),
        "gradient_rollout": chain([eye + (g * a).clamp(min=0).mean(0) for g, a in zip(grads, attns)]),
        "lrp": pixels.sum(0).clamp(min=0),
    }


METHODS = {
    "transformer_attribution": TransformerAttribution,
    "partial_lrp": PartialLRP,
    "attention_rollout": AttentionRollout,
    "gradient_rollout": GradientRollout,
    "lrp": LRP,
}


@pytest.fixture(scope="module")
def setup():
    """A ViT with LayerScale (plain blocks are covered by the float model below)."""
    model = make_vit(seed=3, init_values=0.7)
    clf = classifier_for(model)
    torch.manual_seed(4)
    x = clf.normalize(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    targets = torch.tensor([2, 7])
    low = clf.normalize(torch.zeros(1, 3, 1, 1, dtype=torch.float64)).view(3)
    high = clf.normalize(torch.ones(1, 3, 1, 1, dtype=torch.float64)).view(3)
    refs = [ref_maps(model, x[i], int(targets[i]), low, high) for i in range(2)]
    return clf, x, targets, refs


def test_reference_forward_is_the_timm_forward(setup):
    clf, x, _, _ = setup
    with torch.no_grad():
        expected = clf.module(x)
        ours = torch.stack([ref_forward(clf.module, x[i])[0] for i in range(2)])
    assert torch.allclose(ours, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stabilizer, tolerance", [(0.0, 1e-8), (rules.STABILIZER, 1e-4)], ids=["exact", "default"])
@pytest.mark.parametrize("key", sorted(METHODS))
def test_method_matches_the_reference(setup, key, stabilizer, tolerance, monkeypatch):
    """Without the rules' 1e-9 denominator stabiliser (the reference has none) the maps agree to
    float64 rounding (measured ≤ 3e-10 of the maximum); with it, to 1e-4 of the map's maximum (measured
    ≤ 4e-5: a few denominators of the z-rule are that small)."""
    monkeypatch.setattr(rules, "STABILIZER", stabilizer)
    clf, x, targets, refs = setup
    method = METHODS[key]()
    params = method.resolve_params(clf)
    maps = method.attribute(clf, x, targets, params, None)
    expected = torch.stack([r[key] for r in refs])
    assert maps.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0
    assert torch.allclose(maps, expected, rtol=tolerance, atol=tolerance * scale), (
        f"max abs difference {float((maps - expected).abs().max()):.3g} of max {scale:.3g}"
    )


def test_transformer_attribution_depends_on_the_target(setup):
    clf, x, _, _ = setup
    method = TransformerAttribution()
    params = method.resolve_params(clf)
    a = method.attribute(clf, x[:1], torch.tensor([1]), params, None)
    b = method.attribute(clf, x[:1], torch.tensor([5]), params, None)
    assert not torch.allclose(a, b)


def test_start_block_leaves_out_the_first_blocks(setup):
    clf, x, targets, _ = setup
    method = TransformerAttribution()
    full = method.attribute(clf, x, targets, method.resolve_params(clf), None)
    last = method.attribute(clf, x, targets, method.resolve_params(clf, {"start_block": 2}), None)
    assert not torch.allclose(full, last)
    with pytest.raises(ValueError, match="start_block must be below the model's 3 blocks"):
        method.attribute(clf, x, targets, method.resolve_params(clf, {"start_block": 3}), None)


# -- rollout by hand --------------------------------------------------------------------------
def uniform_attention_vit(depth):
    """q = k = 0 in every block: each attention row is uniform, 1/N."""
    model = make_vit(seed=5, img=16, patch=8, dim=16, depth=depth, heads=2)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.qkv.weight[: 2 * 16].zero_()
            blk.attn.qkv.bias[: 2 * 16].zero_()
    return model


@pytest.mark.parametrize("depth, expected", [(1, 0.1), (2, 0.15)])
def test_attention_rollout_by_hand(depth, expected):
    # N = 5 tokens, uniform attention U: Ã = (U + I)/2 has 0.6 on the diagonal and 0.1 elsewhere.
    # One block: class row 0.1 for each patch. Two: Ã²[0, j] = 0.6·0.1 + 0.1·0.6 + 3·0.1·0.1 = 0.15.
    model = uniform_attention_vit(depth)
    clf = classifier_for(model, img=16)
    x = clf.normalize(torch.rand(2, 3, 16, 16, dtype=torch.float64))
    method = AttentionRollout()
    maps = method.attribute(clf, x, torch.tensor([0, 1]), method.resolve_params(clf), None)
    assert maps.shape == (2, 2, 2)
    assert torch.allclose(maps, torch.full_like(maps, expected))


def test_attention_rollout_head_fusion_and_discard():
    model = make_vit(seed=6, img=16, patch=8, dim=16, depth=1, heads=2)
    clf = classifier_for(model, img=16)
    x = clf.normalize(torch.rand(1, 3, 16, 16, dtype=torch.float64))
    with torch.no_grad():
        _, rec = ref_forward(model, x[0])
    attn = torch.stack(rec["blocks"][0]["attn"])            # 2×5×5
    method = AttentionRollout()

    def run(**params):
        return method.attribute(clf, x, torch.tensor([0]), method.resolve_params(clf, params), None)[0].flatten()

    def by_hand(fused):
        m = fused + torch.eye(5, dtype=fused.dtype)
        return (m / m.sum(1, keepdim=True))[0, 1:]

    assert torch.allclose(run(head_fusion="max"), by_hand(attn.max(0).values))
    assert torch.allclose(run(head_fusion="min"), by_hand(attn.min(0).values))
    # discarding 40 % of 25 entries zeroes the 10 smallest (the [0, 0] entry is kept)
    fused = attn.mean(0).flatten().clone()
    lowest = fused.argsort()[:10]
    fused[lowest[lowest != 0]] = 0
    assert torch.allclose(run(discard_ratio=0.4), by_hand(fused.view(5, 5)))


# -- batching through the engine --------------------------------------------------------------
@pytest.fixture(scope="module")
def float_setup():
    clf = classifier_for(make_vit(seed=3).float())
    torch.manual_seed(4)
    return clf, clf.normalize(torch.rand(2, 3, 32, 32)), torch.tensor([2, 7])


@pytest.mark.parametrize("key", sorted(METHODS))
def test_batch_equals_one_by_one_through_the_engine(float_setup, key):
    clf, x, targets = float_setup
    batch = explain(clf, x, key, targets=targets)
    for i in range(x.shape[0]):
        [one] = explain(clf, x[i:i + 1], key, targets=[int(targets[i])])
        scale = float(one.saliency.abs().max())
        assert scale > 0
        assert torch.allclose(batch[i].saliency, one.saliency, rtol=1e-4, atol=1e-5 * scale)
        assert batch[i].saliency.shape == (32, 32)


@pytest.mark.parametrize("key", ["transformer_attribution", "lrp", "attention_rollout"])
def test_chunk_size_does_not_change_the_maps(float_setup, key):
    clf, x, targets = float_setup
    method = METHODS[key]()
    whole = method.attribute(clf, x, targets, method.resolve_params(clf, {"batch_size": 16}), None)
    single = method.attribute(clf, x, targets, method.resolve_params(clf, {"batch_size": 1}), None)
    assert torch.allclose(whole, single, rtol=1e-4, atol=1e-6 * float(whole.abs().max()))
