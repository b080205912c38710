"""Layer-wise relevance propagation rules as explicit tensor formulas (no autograd tricks).

Each function takes a layer's forward inputs and the relevance ``R`` of its output and returns
the relevance of its inputs. Notation (Montavon et al., "Layer-wise relevance propagation: an
overview", 2019): ``z_ij = x_i w_ij`` is the contribution of input ``i`` to output ``j``,
``z_j = Σ_i z_ij`` and ``R_i = Σ_j (z_ij / z_j) R_j``. Every rule here leaves out biases, so the
total relevance is conserved exactly (``Σ_i R_i = Σ_j R_j``) except where a denominator is
zero; there the relevance of that output is dropped, as in Chefer et al.'s reference code.

All functions are batched: the leading dimension is the batch and nothing is summed across it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from explain.core.ops import as_plane

#: Added to every non-zero denominator with its sign, so tiny denominators do not explode.
STABILIZER = 1e-9


def safe_divide(numerator: Tensor, denominator: Tensor, eps: float | None = None) -> Tensor:
    """``numerator / (denominator ± eps)`` with the sign of the denominator, and 0 where it is 0.

    ``eps`` defaults to the module's :data:`STABILIZER` (read at call time).

    Zero denominators come from dead units (e.g. every contribution clamped away by the
    α1β0 rule); their relevance has nowhere to go and is dropped rather than turned into NaN.
    """
    eps = STABILIZER if eps is None else eps
    # sign(0) = 0 leaves zero denominators zero; their inf/NaN quotients are overwritten below.
    # Five passes over memory (the relevance rules divide full activation tensors).
    quotient = numerator / torch.add(denominator, denominator.sign(), alpha=eps)
    return quotient.masked_fill_(denominator == 0, 0)


def _is_channels_last(x: Tensor) -> bool:
    """Whether a 4-D tensor is laid out NHWC (as the CPU forward passes produce, see
    ``methods.base.cpu_channels_last``); a tensor that is both (one channel, or 1×1) counts as NCHW."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _memory_format(x: Tensor) -> torch.memory_format:
    """The memory format new tensors that meet ``x`` element-wise should have."""
    return torch.channels_last if _is_channels_last(x) else torch.contiguous_format


def per_sample_sum(x: Tensor) -> Tensor:
    """Sum over every dimension but the first (batch): ``B×…`` → ``B``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def _broadcast_batch(values: Tensor, like: Tensor) -> Tensor:
    """A ``B`` vector shaped to broadcast against ``like`` (``B×…``)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def conv2d_back(
    input_shape: torch.Size | tuple[int, ...],
    weight: Tensor,
    s: Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    """The back-projection ``c_i = Σ_j w_ij s_j`` of a convolution ``z_j = Σ_i x_i w_ij``, which
    every convolution rule needs: the gradient of ``Σ_j z_j s_j`` with respect to ``x``.

    Shapes: ``s`` ``B×O×h×w``, ``weight`` ``O×C/groups×kh×kw``; returns ``B×C×H×W`` with
    ``input_shape = (B, C, H, W)``.

    Computed as the transposed convolution, with the output padding that gives back ``H×W``
    when a stride drops trailing rows or columns: ``p_out = H − ((h−1)·stride − 2·padding +
    dilation·(kh−1) + 1)``. On the CPU that costs about one forward convolution, where
    ``torch.nn.grad.conv2d_input`` (autograd's convolution backward, which the rules used
    before) took 1–3× as long for dense convolutions and up to 50× for depthwise ones (measured
    on 2 cores at ResNet18's and EfficientNet-Lite0's shapes). String paddings ("same", which
    may pad one side more than the other) take autograd through the forward convolution: the
    convolution is linear in ``x``, so its gradient at zeros is the back-projection.
    """
    if isinstance(padding, str):
        with torch.enable_grad():
            x = torch.zeros(input_shape, dtype=s.dtype, device=s.device, requires_grad=True)
            z = torch.nn.functional.conv2d(x, weight.detach(), None, stride, padding, dilation, groups)
            (back,) = torch.autograd.grad(z, x, s)
        return back
    stride, padding, dilation = as_plane(stride), as_plane(padding), as_plane(dilation)
    output_padding = tuple(
        int(size) - ((out - 1) * st - 2 * pad + dil * (k - 1) + 1)
        for size, out, st, pad, dil, k in zip(input_shape[-2:], s.shape[-2:], stride, padding, dilation, weight.shape[-2:])
    )
    return torch.nn.functional.conv_transpose2d(s, weight, None, stride, padding, output_padding, groups, dilation)


def linear_alpha_beta(x: Tensor, weight: Tensor, relevance: Tensor, alpha: float = 1.0) -> Tensor:
    """The αβ rule for ``y = x Wᵀ`` (bias ignored), Bach et al. 2015.

    Args:
        x: inputs ``…×I``.
        weight: ``O×I``.
        relevance: ``…×O``.
        alpha: ``α ≥ 1``; ``β = α − 1``. ``α = 1`` is the z⁺ (α1β0) rule Chefer et al. use.

    Positive contributions ``z⁺_ij = x⁺_i w⁺_ij + x⁻_i w⁻_ij`` receive ``α`` times the output
    relevance in proportion to their share of ``z⁺_j``, negative ones ``β`` times theirs; the
    total is conserved because ``α − β = 1``.

    Returns:
        ``…×I``.
    """
    if alpha < 1:
        raise ValueError(f"alpha must be >= 1 (beta = alpha - 1 >= 0), not {alpha}")
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)

    def share(w_for_pos_x: Tensor, w_for_neg_x: Tensor) -> Tensor:
        z = x_pos @ w_for_pos_x.T + x_neg @ w_for_neg_x.T
        s = safe_divide(relevance, z)
        return x_pos * (s @ w_for_pos_x) + x_neg * (s @ w_for_neg_x)

    activators = share(w_pos, w_neg)
    if alpha == 1:
        return activators
    inhibitors = share(w_neg, w_pos)
    return alpha * activators - (alpha - 1) * inhibitors


def conv2d_zbox(
    x: Tensor,
    weight: Tensor,
    relevance: Tensor,
    low: Tensor,
    high: Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    divide: Callable[[Tensor, Tensor], Tensor] = safe_divide,
) -> Tensor:
    """The z^B rule for an input convolution whose inputs lie in ``[low, high]`` (bias ignored).

    ``z_ij = x_i w_ij − l_i w⁺_ij − h_i w⁻_ij`` is non-negative for every input in the box,
    so relevance is split by how far each pixel pushes the output beyond its bounds
    (Montavon et al., Pattern Recognition 2017): ``s_j = R_j / z_j``,
    ``R_i = x_i Σ_j w_ij s_j − (l_i Σ_j w⁺_ij s_j + h_i Σ_j w⁻_ij s_j)``.

    Args:
        x: ``B×C×H×W`` inputs; ``low``/``high`` broadcast to it (e.g. ``1×C×1×1`` per-channel bounds
            of the normalised image, or ``B×1×1×1`` per-image minimum/maximum). Bounds with a
            batch of one (the same for every image) are convolved once for the whole batch.
        weight: ``O×C/groups×k×k``; ``relevance``: ``B×O×h×w``.
        divide: ``divide(R, z)``, the stabilised quotient (default :func:`safe_divide`; zennit's
            rule stabilises differently, see ``relevance.cnn.ZBoxConv2d``).

    The three back-projections of an ungrouped convolution are one transposed convolution with
    the weights ``[w, w⁺, w⁻]`` stacked along the input channels: about the cost of one of them
    on a 3-channel image.

    Returns:
        ``B×C×H×W``.
    """
    low, high = _box_bound(low, x), _box_bound(high, x)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    conv = lambda inp, w: torch.nn.functional.conv2d(inp, w, None, stride, padding, dilation, groups)  # noqa: E731
    z = conv(x, weight) - (conv(low, w_pos) + conv(high, w_neg))
    s = divide(relevance, z)
    if groups == 1:
        stacked = torch.cat([weight, w_pos, w_neg], dim=1)
        shape = (x.shape[0], 3 * x.shape[1], *x.shape[2:])
        g, g_pos, g_neg = conv2d_back(shape, stacked, s, stride, padding, dilation, groups).chunk(3, dim=1)
    else:
        g, g_pos, g_neg = (conv2d_back(x.shape, w, s, stride, padding, dilation, groups) for w in (weight, w_pos, w_neg))
    return x * g - (low * g_pos + high * g_neg)


def _box_bound(bound: Tensor | float, x: Tensor) -> Tensor:
    """A z^B bound as ``b×C×H×W`` with ``b`` its own batch (1 unless it has one per image), so a
    bound shared by the batch is convolved once; a bound with more images than ``x`` is cut to
    ``x``'s batch, as zennit does."""
    bound = torch.as_tensor(bound).to(x)
    if bound.dim() == 4 and bound.shape[0] > x.shape[0]:
        bound = bound[:x.shape[0]]
    batch = bound.shape[0] if bound.dim() == 4 else 1
    return bound.expand(batch, *x.shape[1:])


def conv2d_zplus_wsquare(
    x: Tensor,
    weight: Tensor,
    relevance: Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    """z⁺ for a convolution (bias ignored), with the w² rule for units z⁺ cannot explain.

    z⁺ splits an output's relevance over the positive contributions
    ``z⁺_ij = x⁺_i w⁺_ij + x⁻_i w⁻_ij``. A unit whose every contribution is negative (common in
    depthwise convolutions, which see 9 inputs, when a folded batch-norm bias keeps the unit
    active) has ``z⁺_j = 0`` and plain z⁺ drops its relevance; here such a unit's relevance
    is split in proportion to ``w_ij²`` instead (Montavon et al. 2017), so the total is always
    conserved. Units with ``z⁺_j > 0`` get exactly the z⁺ rule:

    ``R_i = x⁺_i Σ_j w⁺_ij s_j + x⁻_i Σ_j w⁻_ij s_j + Σ_j w_ij² t_j`` with
    ``s_j = R_j / z⁺_j`` where ``z⁺_j > 0`` (else 0) and ``t_j = R_j / (Σ_i' w_i'j² + ε)`` where
    ``z⁺_j = 0`` (else 0), the sum over ``i'`` running over the taps that see an input (not padding).

    Shapes: ``x`` ``B×C×H×W``, ``weight`` ``O×C/groups×k×k``, ``relevance`` ``B×O×h×w``.

    Work is skipped only where it is exactly zero, so the result is the formula above:
    inputs with no negative entry (every input after a ReLU) have ``x⁻ = 0``, so both ``x⁻``
    terms are left out; the w² back-projection runs only when some unit has ``z⁺_j = 0`` and
    ``R_j ≠ 0`` (otherwise every ``t_j`` is 0). Signed inputs of an ungrouped convolution take
    both z⁺ terms in one convolution over twice the channels: the same sums, in another order
    (float rounding only). A quotient ``R_j / z⁺_j`` that overflows the float type (a live
    unit's ``z⁺_j`` below about ``|R_j| · 1e-38`` in float32) is zeroed like a dead unit's,
    where a plain division would carry ``inf`` into the map.
    """
    conv = lambda inp, w: torch.nn.functional.conv2d(inp, w, None, stride, padding, dilation, groups)  # noqa: E731
    back = lambda w, s: conv2d_back(x.shape, w, s, stride, padding, dilation, groups)  # noqa: E731
    # Relevance arriving through a residual sum is a strided slice of a stacked tensor; the
    # convolutions below would each copy it, and the element-wise passes run slower on it.
    memory_format = _memory_format(x)
    relevance = relevance.contiguous(memory_format=memory_format)
    x = x.contiguous(memory_format=memory_format)
    w_pos = weight.clamp(min=0)
    channels = x.shape[1]
    signed = bool(x.amin() < 0)
    if not signed:
        # x⁻ = 0: conv(x⁻, w⁻) and x⁻ · back(w⁻, s) are exact zeros, and x⁺ = x.
        inputs, weights = x, w_pos
    elif groups == 1:
        # [x⁺, x⁻] convolved with [w⁺, w⁻] stacked along the input channels is the same sum
        # conv(x⁺, w⁺) + conv(x⁻, w⁻) as one convolution (one larger matrix product, about
        # twice as fast on the narrow inputs of inverted residual blocks); its back-projection
        # gives back(w⁺, s) and back(w⁻, s) as the two halves of the channels.
        batch, _, height, width = x.shape
        inputs = torch.empty((batch, 2 * channels, height, width), dtype=x.dtype, device=x.device,
                             memory_format=memory_format)
        torch.clamp(x, min=0, out=inputs[:, :channels])
        torch.clamp(x, max=0, out=inputs[:, channels:])
        weights = torch.cat([w_pos, weight.clamp(max=0)], dim=1)
    else:
        inputs = weights = None
    if inputs is not None:
        z_plus = conv(inputs, weights)
    else:
        x_pos, x_neg, w_neg = x.clamp(min=0), x.clamp(max=0), weight.clamp(max=0)
        z_plus = conv(x_pos, w_pos) + conv(x_neg, w_neg)
    # z⁺ is a sum of non-negative products, so a unit is dead exactly where z⁺ = 0.
    fallback = _dead_unit_relevance(x, weight, relevance, z_plus, conv) if bool(z_plus.amin() <= 0) else None
    # Only at dead units does the quotient give ±inf (R ≠ 0) or NaN (R = 0): nan_to_num_ zeroes
    # exactly those. No boolean mask: on the CPU a masked fill or a where over a mask costs 3–4
    # times a division. Written over z⁺: on the CPU every fresh tensor of activation size costs
    # about a pass of its own in page faults.
    s = torch.div(relevance, z_plus, out=z_plus).nan_to_num_(0.0, 0.0, 0.0)
    # (Σ_j w⁺_ij s_j or Σ_j w⁻_ij s_j, the inputs it multiplies) for every z⁺ term
    if inputs is None:
        products = [(back(w_pos, s), x_pos), (back(w_neg, s), x_neg)]
    else:
        back_projection = conv2d_back(inputs.shape, weights, s, stride, padding, dilation, groups)
        if signed:
            products = [(back_projection[:, :channels], inputs[:, :channels]),
                        (back_projection[:, channels:], inputs[:, channels:])]
        else:
            products = [(back_projection, inputs)]
    # summed in place, each product in the pass that adds it (addcmul)
    if fallback is not None:
        result = back(*fallback)
    elif len(products) == 1:
        back_projection, values = products.pop()
        result = back_projection.mul_(values)       # a fresh tensor of its own
    else:
        result = torch.mul(*products.pop(0))        # a view of half the channels
    for back_projection, values in products:
        result.addcmul_(back_projection, values)
    return result


def _dead_unit_relevance(x: Tensor, weight: Tensor, relevance: Tensor, z_plus: Tensor, conv) -> tuple[Tensor, Tensor] | None:
    """The w² part of :func:`conv2d_zplus_wsquare`: ``(w², t)`` with ``t_j = R_j / (Σ_i' w_i'j² + ε)``
    at dead units (``z⁺_j = 0``) and exactly 0 elsewhere, or ``None`` when every ``t_j`` is 0
    (the back-projection would add exact zeros)."""
    # z⁺ ≥ 0, so 1 − sign(z⁺) is 1 at dead units and 0 elsewhere: R − R·sign(z⁺) keeps R there
    # and gives exact zeros at live units, in arithmetic passes (no boolean mask), in one buffer
    dead_relevance = torch.sign(z_plus)
    torch.addcmul(relevance, relevance, dead_relevance, value=-1, out=dead_relevance)
    # "any non-zero" as two reductions: on the CPU amax and amin each take a tenth of any()
    if not (bool(dead_relevance.amax() > 0) or bool(dead_relevance.amin() < 0)):
        return None
    squared = weight * weight
    # Σ_i' w_i'j² over the taps that see an input depends on the input's shape only, not its
    # values: one image of ones gives it for the whole batch (padding taps hold no input), laid
    # out like x (ones_like keeps the strides; a depthwise convolution over NCHW ones of a
    # channels-last batch takes up to 5 times as long here).
    in_bounds = conv(torch.ones_like(x[:1]), squared)
    # No zero test: where Σ w² = 0 every in-bounds w² is 0, so the back-projection multiplies
    # t by zeros whatever it is, and the finite 1/ε is as good as safe_divide's 0 (whose masked
    # fill costs ten times this on the CPU).
    return squared, dead_relevance.mul_(in_bounds.add_(STABILIZER).reciprocal_())


def matmul_z(a: Tensor, b: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """LRP-0 for the bilinear product ``Z = a @ b`` with the halving of Chefer et al. 2021.

    ``a``: ``…×n×k``, ``b``: ``…×k×m``, ``relevance``: ``…×n×m``. Under the z-rule each operand
    alone receives the whole relevance (``Σ a ⊙ ∂Z/∂a ⊙ S = Σ R``), so each share is halved.
    This equals the normalisation by each operand's share of the absolute relevance (their
    sums are equal), which is how the paper states it.

    Returns:
        ``(R_a, R_b)`` shaped like ``a`` and ``b``.
    """
    s = safe_divide(relevance, a @ b)
    r_a = a * (s @ b.transpose(-1, -2))
    r_b = b * (a.transpose(-1, -2) @ s)
    return r_a / 2, r_b / 2


def add_normalized(a: Tensor, b: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """Relevance of the two operands of ``Z = a + b`` (a residual connection), Chefer et al. 2021.

    First the z-rule: ``R_a = a ⊙ R / Z``, ``R_b = b ⊙ R / Z``. Then each operand's relevance is
    rescaled so that its total is its share of the absolute totals times the output total,
    ``Σ R̄_a = |Σ R_a| / (|Σ R_a| + |Σ R_b|) · Σ R`` (and likewise for ``b``), which conserves
    ``Σ R̄_a + Σ R̄_b = Σ R`` even where ``a`` and ``b`` cancel. Sums run over each sample
    (the reference code, written for batches of one, sums over the whole tensor).

    Shapes: ``a``, ``b`` broadcast to ``relevance`` (``B×…``); the results have its shape.
    """
    a = a.expand_as(relevance)
    b = b.expand_as(relevance)
    s = safe_divide(relevance, a + b)
    r_a, r_b = a * s, b * s
    sum_a, sum_b, total = per_sample_sum(r_a), per_sample_sum(r_b), per_sample_sum(relevance)
    norm = sum_a.abs() + sum_b.abs()
    target_a = safe_divide(sum_a.abs(), norm) * total
    target_b = safe_divide(sum_b.abs(), norm) * total
    r_a = r_a * _broadcast_batch(safe_divide(target_a, sum_a), r_a)
    r_b = r_b * _broadcast_batch(safe_divide(target_b, sum_b), r_b)
    return r_a, r_b


__all__ = [
    "STABILIZER", "safe_divide", "per_sample_sum", "conv2d_back", "linear_alpha_beta", "conv2d_zbox", "conv2d_zplus_wsquare",
    "matmul_z", "add_normalized",
]
