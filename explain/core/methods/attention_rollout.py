"""Attention rollout (Abnar & Zuidema, ACL 2020)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.methods.base import OwnForwardMethod, Param, batch_size_param, top1_if_none
from explain.core.registry import register_method
from explain.core.relevance.rollout import plus_identity, rollout
from explain.core.relevance.vit import class_token_row, trace_vit

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attention: Tensor, how: str) -> Tensor:
    """``B×h×N×N`` → ``B×N×N`` by the mean, maximum or minimum over heads."""
    if how == "mean":
        return attention.mean(dim=1)
    if how == "max":
        return attention.amax(dim=1)
    if how == "min":
        return attention.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {list(HEAD_FUSIONS)}, not {how!r}")


def discard_lowest(attention: Tensor, ratio: float) -> Tensor:
    """Zero the ``ratio`` fraction of smallest entries of each ``N×N`` matrix (``B×N×N``).

    The class token's attention to itself (entry ``[0, 0]``) is always kept, as in the
    widely used implementation of this filter (J. Gildenblat, vit-explain).
    """
    if ratio <= 0:
        return attention
    b, n, _ = attention.shape
    flat = attention.reshape(b, n * n)
    count = int(n * n * ratio)
    if count == 0:
        return attention
    lowest = flat.topk(count, dim=1, largest=False).indices
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
    drop[:, 0] = False
    return flat.masked_fill(drop, 0).reshape(b, n, n)


@register_method("attention_rollout")
class AttentionRollout(OwnForwardMethod):
    """Attention rollout: the attention maps of all blocks multiplied, with the residual identity.

    For every block the attention probabilities ``A_b`` (``B×h×N×N``) are fused over heads
    (``head_fusion``: mean as in the paper, or max/min), optionally the lowest
    ``discard_ratio`` of the entries are zeroed, the identity is added for the residual
    connection and rows are renormalised to sum to 1: ``Ã_b = (Ā_b + I) / rowsum``
    (the paper's ``0.5 A + 0.5 I`` when nothing is discarded). ``C = Ã_B ⋯ Ã_1``; the map is the
    class-token row of ``C`` without the class token, on the patch grid (``B×g×g``).
    No gradients and no class dependence: every target gets the same map.
    Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.

    Example::

        [e] = explain(vit_classifier, x, "attention_rollout", params={"head_fusion": "max"})
    """

    label: ClassVar[str] = "Attention Rollout"
    families: ClassVar[frozenset[str]] = frozenset({"vit"})
    group = "transformer"
    uses_gradients: ClassVar[bool] = False
    params: ClassVar[tuple[Param, ...]] = (
        Param("head_fusion", "choice", "mean", choices=HEAD_FUSIONS,
              help="How the heads' attention maps are combined per block (the paper averages)."),
        Param("discard_ratio", "float", 0.0, minimum=0.0, maximum=0.99,
              help="Fraction of the smallest fused attention values zeroed in each block before "
                   "rollout (0 in the paper; 0.9 is a common choice for sharper maps)."),
        batch_size_param("images", keeps_activations=True),
    )

    def maps_and_logits(self, classifier, inputs, targets, params):
        trace = trace_vit(classifier.module, inputs, with_grad=False)
        logits = trace.logits.detach()
        mixing = []
        for block in trace.blocks:
            fused = discard_lowest(fuse_heads(block.attn, params["head_fusion"]), params["discard_ratio"])
            with_residual = plus_identity(fused)
            mixing.append(with_residual / with_residual.sum(dim=-1, keepdim=True))
        return class_token_row(rollout(mixing), classifier.module), logits, top1_if_none(logits, targets)
