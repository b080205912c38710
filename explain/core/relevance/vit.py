"""Relevance propagation through timm's ``VisionTransformer`` (Chefer, Gur, Wolf, CVPR 2021).

The reference implementation rebuilds the ViT from layers that each know how to propagate
relevance. Here the timm model the site loads runs unchanged: :func:`trace_vit` records,
with forward hooks, every tensor the rules need (block inputs, normed tokens, q/k/v, the
attention maps, MLP hidden units, the class-token features), and :func:`propagate` applies
the rules of :mod:`explain.core.relevance.rules` from the logits back to the pixels:

=====================  ==========================================================
operation              rule
=====================  ==========================================================
Linear (head, qkv,     αβ with ``α = 1`` (z⁺), bias ignored
proj, fc1, fc2)
LayerNorm, GELU,       relevance passes unchanged (as in the reference code)
softmax, LayerScale,
dropout
``A @ V``, ``Q @ Kᵀ``  z-rule on both operands, each half of the relevance
residual ``x + f(x)``, z-rule, then each operand's share of the absolute
``tokens + pos_embed``  relevance, rescaled to conserve the total
branching (``x`` used  relevances of the branches summed
twice)
class-token pooling    all relevance to the class token
patch embedding conv   z^B with the normalised image's bounds
=====================  ==========================================================

Every rule conserves the total, so ``Σ R`` is the same at every block boundary (up to
relevance dropped at zero denominators and float rounding), whether or not the layers have
biases. At the input, ``Σ R_pixels + R_pos_embed + R_class_token = Σ R_logits``: the share
of the two learnt embeddings is not attributed to pixels (the reference code drops it too).

Work the maps do not need is skipped (the maps are those of the plain rules up to float
rounding): the α1β0 rule reuses each linear layer's recorded output (:func:`linear_zplus`),
``A @ V`` is not recomputed, the last block propagates the class token's row only (the only
token the head reads), and with ``to_pixels=False`` the lowest block stops at its attention.

Shapes: ``B`` images, ``N = 1 + g·g`` tokens, ``D`` width, ``h`` heads, ``d = D / h``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn

from explain.core.hooks import HookSession
from explain.core.relevance import rules
from explain.core.relevance.rules import (
    add_normalized,
    conv2d_zbox,
    linear_alpha_beta,
    per_sample_sum,
)

try:  # timm is a runtime dependency; keep the import failure readable
    from timm.layers import Attention, Mlp
    from timm.models.vision_transformer import Block, VisionTransformer
except ImportError as error:  # pragma: no cover - timm is pinned in requirements.txt
    raise ImportError("explain.core.relevance.vit needs timm (pip install -r requirements.txt)") from error


def check_vit(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first feature of ``model`` the propagation does not cover.

    Supported: timm ``VisionTransformer`` with one class token, learnt absolute position
    embeddings added after the class token is prepended, class-token pooling, pre-norm
    ``Block``\\ s with plain ``Attention`` (no q/k norm, no gate) and ``Mlp``; any depth,
    width, number of heads, patch and image size (e.g. ``vit_base_patch16_224``, DeiT without
    distillation token).
    """
    if not isinstance(model, VisionTransformer):
        raise ValueError(
            f"relevance propagation for ViTs needs a timm VisionTransformer, not {type(model).__name__}"
        )
    problems = []
    if model.cls_token is None or model.num_prefix_tokens != 1:
        problems.append("exactly one class token and no register tokens")
    if model.global_pool != "token" or model.attn_pool is not None:
        problems.append("class-token pooling (global_pool='token')")
    if model.pos_embed is None or model.no_embed_class or model.dynamic_img_size:
        problems.append("a fixed position embedding covering the class token")
    if not isinstance(model.fc_norm, nn.Identity) or not isinstance(model.norm_pre, nn.Identity):
        problems.append("no fc_norm/norm_pre")
    if not isinstance(model.patch_embed.proj, nn.Conv2d):
        problems.append("a convolutional patch embedding")
    for index, block in enumerate(model.blocks):
        if type(block) is not Block or type(block.attn) is not Attention or type(block.mlp) is not Mlp:
            problems.append(f"plain Block/Attention/Mlp (block {index} is {type(block).__name__})")
            break
        attn = block.attn
        if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)) or attn.gate is not None:
            problems.append(f"attention without q/k norm or gate (block {index})")
            break
    if problems:
        raise ValueError(
            f"this {type(model).__name__} is outside what ViT relevance propagation supports: it needs "
            + "; ".join(problems)
            + ". Use a CAM method for this model instead."
        )


@contextlib.contextmanager
def unfused_attention(model: nn.Module) -> Iterator[None]:
    """Run timm attention through its explicit softmax path so hooks see the attention maps.

    timm's ``Attention`` calls ``scaled_dot_product_attention`` when ``fused_attn`` is true,
    which never materialises ``softmax(QKᵀ/√d)``. The flag is switched off per module for the
    block and restored afterwards, also when an exception escapes.
    """
    saved = [(m, m.fused_attn) for m in model.modules() if isinstance(m, Attention)]
    try:
        for module, _ in saved:
            module.fused_attn = False
        yield
    finally:
        for module, flag in saved:
            module.fused_attn = flag


@dataclass
class BlockTrace:
    """What one ``Block`` computed, all detached except ``attn_graph``."""

    x_in: Tensor = None          # B×N×D   block input
    normed1: Tensor = None       # B×N×D   norm1(x_in), the qkv input
    qkv: Tensor = None           # B×N×3D  qkv(normed1) (bias included: these are the operands)
    attn_graph: Tensor = None    # B×h×N×N softmax(QKᵀ/√d), still attached to the autograd graph
    attn_out: Tensor = None      # B×N×D   (A V) with heads merged, the proj input
    proj_out: Tensor = None      # B×N×D   proj(attn_out), bias included, before LayerScale
    branch1: Tensor = None       # B×N×D   ls1(attn(...)), added to x_in
    normed2: Tensor = None       # B×N×D   norm2(x_mid), the fc1 input
    fc1_out: Tensor = None       # B×N×H   fc1(normed2), bias included, before GELU
    hidden: Tensor = None        # B×N×H   GELU(fc1(...)), the fc2 input
    fc2_out: Tensor = None       # B×N×D   fc2(hidden), bias included, before LayerScale
    branch2: Tensor = None       # B×N×D   ls2(mlp(...)), added to x_mid

    @property
    def attn(self) -> Tensor:
        return self.attn_graph.detach()


@dataclass
class ViTTrace:
    """One forward pass of a timm ViT with everything relevance propagation needs."""

    model: nn.Module
    pixels: Tensor                       # B×3×H×W   normalised input (requires grad)
    patch_conv: Tensor = None            # B×D×g×g   patch_embed.proj output (the conv, bias included)
    patch_tokens: Tensor = None          # B×(N−1)×D patch_embed output
    pooled: Tensor = None                # B×D       head input (the normed class token)
    logits: Tensor = None                # B×C       attached to the graph
    blocks: list[BlockTrace] = field(default_factory=list)

    def attention_gradients(self, targets: Tensor) -> list[Tensor]:
        """``∂ logit_b[target_b] / ∂A`` for every block: a list of ``B×h×N×N``.

        One backward pass for the batch; each image's gradient depends on its own logit only
        (the model is in eval mode, images do not interact).
        """
        score = self.logits.gather(1, targets.view(-1, 1).to(self.logits.device)).sum()
        grads = torch.autograd.grad(score, [b.attn_graph for b in self.blocks])
        return [g.detach() for g in grads]


def trace_vit(model: nn.Module, inputs: Tensor, *, with_grad: bool = True) -> ViTTrace:
    """Run ``model`` on ``inputs`` (``B×3×H×W``) once, recording every block's internals.

    With ``with_grad=False`` no autograd graph is built (enough for attention rollout);
    :meth:`ViTTrace.attention_gradients` then cannot be used. The model is left exactly as it was: hooks are removed, ``fused_attn`` flags, training
    flags and parameter gradients restored (:class:`explain.core.hooks.HookSession`).
    Parameters are frozen for the pass, so no parameter gradient is ever computed.
    """
    check_vit(model)
    trace = ViTTrace(model=model, pixels=inputs.detach().clone().requires_grad_(with_grad))
    trace.blocks = [BlockTrace() for _ in model.blocks]
    calls = {"blocks": 0}

    def keep_output(record, name, attached=False):
        def hook(module, args, output):
            setattr(record, name, output if attached else output.detach())
        return hook

    def keep_input(record, name):
        def hook(module, args):
            setattr(record, name, args[0].detach())
        return hook

    def count_block(module, args):
        calls["blocks"] += 1

    grad_mode = contextlib.nullcontext() if with_grad else torch.no_grad()
    with HookSession(model, enable_grad=with_grad) as session, unfused_attention(model), grad_mode:
        session.freeze_parameters()
        session.forward_hook(model.patch_embed.proj, keep_output(trace, "patch_conv"))
        session.forward_hook(model.patch_embed, keep_output(trace, "patch_tokens"))
        session.forward_pre_hook(model.head, keep_input(trace, "pooled"))
        for block, record in zip(model.blocks, trace.blocks):
            session.forward_pre_hook(block, count_block)
            session.forward_pre_hook(block, keep_input(record, "x_in"))
            session.forward_hook(block.norm1, keep_output(record, "normed1"))
            session.forward_hook(block.attn.qkv, keep_output(record, "qkv"))
            session.forward_hook(block.attn.attn_drop, keep_output(record, "attn_graph", attached=True))
            session.forward_pre_hook(block.attn.proj, keep_input(record, "attn_out"))
            session.forward_hook(block.attn.proj, keep_output(record, "proj_out"))
            session.forward_hook(block.ls1, keep_output(record, "branch1"))
            session.forward_hook(block.norm2, keep_output(record, "normed2"))
            session.forward_hook(block.mlp.fc1, keep_output(record, "fc1_out"))
            session.forward_pre_hook(block.mlp.fc2, keep_input(record, "hidden"))
            session.forward_hook(block.mlp.fc2, keep_output(record, "fc2_out"))
            session.forward_hook(block.ls2, keep_output(record, "branch2"))
        model.eval()  # dropout and stochastic depth off; the session restores the flags
        trace.logits = model(trace.pixels)
    missing = [
        f"block {i}.{name}" for i, rec in enumerate(trace.blocks)
        for name in (
            "x_in", "normed1", "qkv", "attn_graph", "attn_out", "proj_out", "branch1", "normed2", "fc1_out",
            "hidden", "fc2_out", "branch2",
        )
        if getattr(rec, name) is None
    ] + [name for name in ("patch_conv", "patch_tokens", "pooled") if getattr(trace, name) is None]
    if calls["blocks"] != len(model.blocks) or missing:
        raise ValueError(
            f"expected each of the {len(model.blocks)} blocks to run once and record its tensors, saw "
            f"{calls['blocks']} block calls" + (f" and nothing for {missing[:3]}" if missing else "") + "; "
            "relevance propagation needs the standard VisionTransformer.forward, on a model no other "
            "thread is running at the same time"
        )
    return trace


@dataclass
class ViTRelevance:
    """Relevance at every level of a ViT for a batch (all tensors detached).

    ``attention[b]`` is the relevance reaching block ``b``'s attention map (``B×h×N×N``,
    after the halving at ``A @ V``), what Transformer Attribution multiplies with the gradient.
    ``totals`` holds ``Σ R`` per image (``B``) at each level, for conservation checks:
    ``"logits"``, ``"pooled"``, ``"block0"``… (input of each block), ``"blocks_out"``,
    ``"patch_tokens"``, ``"pos_embed"``, ``"class_token"`` and ``"pixels"``.
    """

    pixels: Tensor | None                 # B×3×H×W, or None when stopped before the embedding
    attention: list[Tensor]
    totals: dict[str, Tensor]


#: A unit's z⁺ obtained as ``(|x|·|w| + z) / 2`` is trusted when it is at least this fraction of
#: ``|x|·|w| + |b|`` (the size of the terms it is computed from): the rounding of those terms is
#: then magnified at most 16 times in ``z⁺``. Units below it (few or none; dead units, with
#: ``z⁺ = 0``, among them) get the exact four-product rule.
ZPLUS_TRUST = 1 / 16


def linear_zplus(x: Tensor, weight: Tensor, bias: Tensor | None, output: Tensor, relevance: Tensor) -> Tensor:
    """The α1β0 (z⁺) rule for ``y = x Wᵀ + b`` using the recorded output ``y``: three products, not four.

    With ``z = y − b = x Wᵀ`` from the forward pass, ``z⁺_j = Σ_i (x_i w_ij)⁺ = (Σ_i |x_i||w_ij| + z_j) / 2``
    takes one product, and with ``s = R / z⁺`` the back-projection
    ``R_i = x⁺_i (s W⁺)_i + x⁻_i (s W⁻)_i = (x_i (s W)_i + |x_i| (s |W|)_i) / 2`` takes two, against two
    and two for :func:`explain.core.relevance.rules.linear_alpha_beta` with ``α = 1``, whose result this
    equals up to float rounding (bias ignored, dead units' relevance dropped, like there).

    The sums ``|x||W| + z`` and ``x (sW) + |x| (s|W|)`` cancel where a unit's positive contributions
    are small beside its negative ones; output units where ``z⁺ < ZPLUS_TRUST · (|x||W| + |b|)`` in any
    row are therefore taken out of the shortcut and done with the four-product rule on their
    columns of ``W`` only.

    Args:
        x: ``…×I`` layer input; ``weight``: ``O×I``; ``bias``: ``O`` or ``None``;
        output: ``…×O`` the layer's output for ``x`` (bias included); ``relevance``: ``…×O``.

    Returns:
        ``…×I``.
    """
    w_abs = weight.abs()
    x_abs = x.abs()
    # in place where the tensors are large (fc1: B×N×4D): 2z⁺ = Σ_i |x_i||w_ij| + z_j
    twice = x_abs @ w_abs.T
    limit = 2 * ZPLUS_TRUST
    threshold = twice * limit if bias is None else torch.add(bias.abs() * limit, twice, alpha=limit)
    twice += output
    if bias is not None:
        twice -= bias
    doubtful = (twice < threshold).reshape(-1, weight.shape[0]).any(dim=0)
    del threshold
    fixed = None
    if bool(doubtful.any()):
        columns = doubtful.nonzero().squeeze(1)
        fixed = linear_alpha_beta(x, weight[columns], relevance[..., columns], 1.0)
        relevance = relevance.clone()
        relevance[..., columns] = 0      # their share is in ``fixed``
    # R / (2z⁺ ± 2ε) is half of R / (z⁺ ± ε), the stabilised share of rules.safe_divide: the ½ of
    # the back-projection is folded in
    s = rules.safe_divide(relevance, twice, 2 * rules.STABILIZER)
    result = x * (s @ weight)
    result.addcmul_(x_abs, s @ w_abs)
    return result if fixed is None else result + fixed


def _linear(layer: nn.Linear, x: Tensor, output: Tensor, relevance: Tensor, alpha: float) -> Tensor:
    """αβ rule of one linear layer, through :func:`linear_zplus` when ``α = 1``."""
    if alpha == 1:
        bias = None if layer.bias is None else layer.bias.detach()
        return linear_zplus(x, layer.weight.detach(), bias, output, relevance)
    return linear_alpha_beta(x, layer.weight.detach(), relevance, alpha)


def _heads(tokens: Tensor, heads: int) -> Tensor:
    """``B×n×D`` → ``B×h×n×d`` (timm's head split of the merged ``A V``)."""
    b, n, dim = tokens.shape
    return tokens.reshape(b, n, heads, dim // heads).transpose(1, 2)


def _block_relevance(
    block: nn.Module, rec: BlockTrace, relevance: Tensor, alpha: float, *, class_token_only: bool = False,
    input_needed: bool = True,
) -> tuple[Tensor | None, Tensor]:
    """Relevance at a block's input from the relevance at its output; also the attention's (B×h×N×N).

    ``class_token_only``: ``relevance`` is ``B×1×D``, the class token's row, all other tokens'
    relevance being zero (the last block, under class-token pooling). The MLP, LayerNorm,
    residual sums and ``proj`` act token by token, so every token but the class token keeps
    zero relevance down to ``A @ V``; only there does the relevance spread (to ``V``, and through
    row 0 of ``Q Kᵀ`` to ``K``). The rules are the same; the zero rows are just not computed.

    ``input_needed=False`` stops at the attention map and returns ``None`` for the input: the
    lowest block of a propagation that does not go on to the pixels needs neither ``V``'s and
    ``Q Kᵀ``'s relevance nor the ``qkv`` rule.
    """
    b, n, dim = rec.x_in.shape
    heads = block.attn.num_heads
    rows = slice(0, 1) if class_token_only else slice(None)

    # x_out = x_mid + ls2(mlp(norm2(x_mid)))
    x_in = rec.x_in[:, rows]
    branch1 = rec.branch1[:, rows]
    x_mid = x_in + branch1
    r_mid, r_branch = add_normalized(x_mid, rec.branch2[:, rows], relevance)
    r_hidden = _linear(block.mlp.fc2, rec.hidden[:, rows], rec.fc2_out[:, rows], r_branch, alpha)
    # GELU, LayerNorm and LayerScale pass relevance unchanged
    r_mid = r_mid + _linear(block.mlp.fc1, rec.normed2[:, rows], rec.fc1_out[:, rows], r_hidden, alpha)

    # x_mid = x_in + ls1(attn(norm1(x_in)))
    r_in, r_branch = add_normalized(x_in, branch1, r_mid)
    attn_out = rec.attn_out[:, rows]
    r_attn_out = _heads(_linear(block.attn.proj, attn_out, rec.proj_out[:, rows], r_branch, alpha), heads)
    attn = rec.attn[:, :, rows]                                                # B×h×n×N
    q, k, v = rec.qkv.reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)   # each B×h×N×d

    # A @ V, z-rule halved on each operand (rules.matmul_z); the product is the recorded proj
    # input unless a LayerNorm sits between them (timm's scale_attn_norm)
    if isinstance(getattr(block.attn, "norm", nn.Identity()), nn.Identity):
        product = _heads(attn_out, heads)
    else:
        product = attn @ v
    s = rules.safe_divide(r_attn_out, product)
    r_scores = attn * (s @ v.transpose(-1, -2)) / 2                           # B×h×n×N
    if class_token_only:
        r_attn = r_scores.new_zeros(b, heads, n, n)
        r_attn[:, :, :1] = r_scores
    else:
        r_attn = r_scores
    if not input_needed:
        return None, r_attn
    r_v = v * (attn.transpose(-1, -2) @ s) / 2

    # softmax passes relevance unchanged; Q Kᵀ is bilinear like A V (the 1/√d scale cancels)
    q_rows = q[:, :, rows]
    s = rules.safe_divide(r_scores, q_rows @ k.transpose(-1, -2))
    r_q_rows = q_rows * (s @ k) / 2
    r_k = k * (s.transpose(-1, -2) @ q_rows) / 2
    if class_token_only:
        r_q = torch.cat([r_q_rows, r_q_rows.new_zeros(b, heads, n - 1, r_q_rows.shape[-1])], dim=2)
    else:
        r_q = r_q_rows
    r_qkv = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * dim)    # B×N×3D
    r_qkv = _linear(block.attn.qkv, rec.normed1, rec.qkv, r_qkv, alpha)
    if class_token_only:
        r_qkv[:, :1] += r_in
        return r_qkv, r_attn
    return r_in + r_qkv, r_attn


def _patch_embedding_zbox(proj: nn.Conv2d, x: Tensor, conv_out: Tensor, relevance: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """z^B at the patch embedding (:func:`explain.core.relevance.rules.conv2d_zbox`), as matrix products.

    A patch embedding's kernel tiles the image (stride = kernel size, no padding), so the
    convolution is ``patches @ Wᵀ`` on the ``B×g·g×(C·k·k)`` patch matrix. Then
    ``z = x W − l W⁺ − h W⁻`` takes ``x W`` from the recorded output ``conv_out`` (``B×D×g×g``, minus
    the bias) and, for bounds constant over the image (``…×C×1×1``), ``l W⁺`` and ``h W⁻`` from one
    row each; with ``s = R / z``, ``R_pixels = (x − l)(s W⁺) + (x − h)(s W⁻)`` takes two products,
    where ``conv2d_zbox`` runs three convolutions and a transposed one. Any other
    convolution goes to ``conv2d_zbox``.

    Shapes: ``x`` ``B×C×H×W``; ``relevance`` ``B×D×g×g``; ``low``/``high`` broadcast to ``x``.
    """
    weight = proj.weight.detach()
    out_channels, channels, kh, kw = weight.shape
    b, _, height, width = x.shape
    gh, gw = relevance.shape[-2:]
    tiles = (
        not isinstance(proj.padding, str) and tuple(proj.padding) == (0, 0) and tuple(proj.stride) == (kh, kw)
        and tuple(proj.dilation) == (1, 1) and proj.groups == 1 and (gh * kh, gw * kw) == (height, width)
    )
    if not tiles:
        return conv2d_zbox(
            x, weight, relevance, low, high,
            stride=proj.stride, padding=proj.padding, dilation=proj.dilation, groups=proj.groups,
        )

    def to_patches(image: Tensor) -> Tensor:        # …×C×H×W → …×g·g×(C·k·k)
        lead = image.shape[0]
        return (image.reshape(lead, channels, gh, kh, gw, kw).permute(0, 2, 4, 1, 3, 5)
                .reshape(lead, gh * gw, channels * kh * kw))

    def to_image(patches: Tensor) -> Tensor:        # B×g·g×(C·k·k) → B×C×H×W
        return (patches.reshape(b, gh, gw, channels, kh, kw).permute(0, 3, 1, 4, 2, 5)
                .reshape(b, channels, height, width))

    flat = weight.reshape(out_channels, -1)
    w_pos, w_neg = flat.clamp(min=0), flat.clamp(max=0)
    z = conv_out.flatten(2).transpose(1, 2)                                     # B×g·g×D
    if proj.bias is not None:
        z = z - proj.bias.detach()
    for bound, w in ((low, w_pos), (high, w_neg)):
        bound = bound.reshape((1,) * (4 - bound.dim()) + tuple(bound.shape))
        if bound.shape[-2:] == (1, 1):                                          # constant over the image
            per_channel = bound.expand(bound.shape[0], channels, kh, kw).reshape(bound.shape[0], 1, -1)
        else:
            per_channel = to_patches(bound.expand_as(x))
        z = z - per_channel @ w.T
    s = rules.safe_divide(relevance.flatten(2).transpose(1, 2), z)                        # B×g·g×D
    x_patches = to_patches(x)
    low_patches = to_patches(low.expand_as(x))
    high_patches = to_patches(high.expand_as(x))
    return to_image((x_patches - low_patches) * (s @ w_pos) + (x_patches - high_patches) * (s @ w_neg))


def propagate(
    trace: ViTTrace,
    output_relevance: Tensor,
    *,
    low: Tensor | None = None,
    high: Tensor | None = None,
    alpha: float = 1.0,
    to_pixels: bool = True,
    down_to_block: int = 0,
) -> ViTRelevance:
    """Propagate ``output_relevance`` (``B×C``, e.g. a one-hot or the target logit) to the pixels.

    Args:
        trace: from :func:`trace_vit`.
        output_relevance: relevance of the logits, ``B×C``.
        low, high: bounds of the normalised input for the z^B rule at the patch embedding,
            broadcastable to ``B×3×H×W`` (e.g. ``1×3×1×1``). ``None`` takes each image's own
            minimum and maximum, as the reference code does.
        alpha: of the αβ rule in the linear layers (``β = α − 1``; Chefer et al. use 1).
        to_pixels: ``False`` stops at the attention map of block ``down_to_block`` (Transformer
            Attribution and partial LRP need only attention relevances); ``pixels`` is then
            ``None``, ``attention`` holds ``None`` for the blocks not reached, and ``totals``
            has no ``"block{down_to_block}"`` (that block's input relevance is not computed).
        down_to_block: with ``to_pixels=False``, the lowest block to propagate through
            (partial LRP needs only the last one).
    """
    model = trace.model
    totals: dict[str, Tensor] = {"logits": per_sample_sum(output_relevance)}
    with torch.no_grad():
        r_pooled = _linear(
            model.head, trace.pooled, trace.logits.detach(), output_relevance.to(trace.pooled.dtype), alpha,
        )
        totals["pooled"] = per_sample_sum(r_pooled)
        # class-token pooling; the final LayerNorm passes it. The other tokens get none, so the
        # last block starts from the class token's row alone (B×1×D)
        relevance = r_pooled.unsqueeze(1)
        totals["blocks_out"] = per_sample_sum(relevance)
        depth = len(trace.blocks)
        attention: list[Tensor | None] = [None] * depth
        lowest = 0 if to_pixels else down_to_block
        if not 0 <= lowest < depth:
            raise ValueError(f"down_to_block must be in [0, {depth - 1}], not {down_to_block}")
        for index in reversed(range(lowest, depth)):
            input_needed = to_pixels or index > lowest
            relevance, attention[index] = _block_relevance(
                model.blocks[index], trace.blocks[index], relevance, alpha,
                class_token_only=index == depth - 1, input_needed=input_needed,
            )
            if input_needed:
                totals[f"block{index}"] = per_sample_sum(relevance)
        if not to_pixels:
            return ViTRelevance(pixels=None, attention=attention, totals=totals)

        # tokens = cat(class token, patch tokens) + pos_embed
        b = relevance.shape[0]
        cls = model.cls_token.detach().expand(b, -1, -1)
        embedded = torch.cat([cls, trace.patch_tokens], dim=1)
        r_embedded, r_pos = add_normalized(embedded, model.pos_embed.detach(), relevance)
        totals["pos_embed"] = per_sample_sum(r_pos)
        totals["class_token"] = r_embedded[:, 0].sum(dim=-1)
        r_patches = r_embedded[:, 1:]
        totals["patch_tokens"] = per_sample_sum(r_patches)

        x = trace.pixels.detach()
        grid = trace.patch_conv.shape[-2:]
        r_conv = r_patches.transpose(1, 2).reshape(b, -1, *grid)
        if low is None or high is None:
            flat = x.reshape(b, -1)
            low = flat.min(dim=1).values.view(b, 1, 1, 1)
            high = flat.max(dim=1).values.view(b, 1, 1, 1)
        r_pixels = _patch_embedding_zbox(model.patch_embed.proj, x, trace.patch_conv, r_conv, low.to(x), high.to(x))
        totals["pixels"] = per_sample_sum(r_pixels)
    return ViTRelevance(pixels=r_pixels, attention=attention, totals=totals)


def class_token_row(matrix: Tensor, model: nn.Module) -> Tensor:
    """Row of the class token without its own column, on the patch grid: ``B×N×N`` → ``B×gh×gw``."""
    grid = tuple(model.patch_embed.grid_size)
    row = matrix[:, 0, 1:]
    if row.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"{row.shape[-1]} patch tokens do not fill the model's {grid[0]}×{grid[1]} patch grid")
    return row.reshape(-1, *grid)


__all__ = [
    "check_vit", "unfused_attention", "trace_vit", "propagate", "ViTTrace", "BlockTrace",
    "ViTRelevance", "class_token_row",
]
