"""Partial LRP for ViTs: the relevance reaching the last block's attention (Voita et al., ACL 2019)."""
from __future__ import annotations

from typing import ClassVar

import torch

from explain.core.methods.base import OwnForwardMethod, Param, batch_size_param, top1_if_none
from explain.core.registry import register_method
from explain.core.relevance.vit import class_token_row, propagate, trace_vit


@register_method("partial_lrp")
class PartialLRP(OwnForwardMethod):
    """Partial LRP: LRP relevance at the attention map of the **last** block, class-token row.

    Relevance starts as 1 at the target class (as in Chefer et al.'s code, which provides this
    baseline) and is propagated with the ViT rules of :mod:`explain.core.relevance.vit` down
    to the last block's attention probabilities ``R`` (``B×h×N×N``). The map is
    ``mean_heads(R⁺)[class token, patches]`` reshaped to the patch grid (``B×g×g``): the
    positive part is taken per head before averaging, as the reference code does, so heads
    with negative relevance do not cancel positive ones.
    Voita et al., ACL 2019 (head relevance); used as a baseline by Chefer, Gur, Wolf, CVPR 2021.

    Example::

        [e] = explain(vit_classifier, x, "partial_lrp")     # e.saliency: 224×224
    """

    label: ClassVar[str] = "Partial LRP"
    families: ClassVar[frozenset[str]] = frozenset({"vit"})
    group = "propagation"
    uses_gradients: ClassVar[bool] = False
    params: ClassVar[tuple[Param, ...]] = (batch_size_param("images", keeps_activations=True),)

    def maps_and_logits(self, classifier, inputs, targets, params):
        # no gradient needed, and relevance only has to get through the head and the last block
        trace = trace_vit(classifier.module, inputs, with_grad=False)
        logits = trace.logits.detach()
        targets = top1_if_none(logits, targets)
        one_hot = torch.nn.functional.one_hot(targets.to(logits.device), logits.shape[1]).to(logits.dtype)
        last = len(trace.blocks) - 1
        relevance = propagate(trace, one_hot, to_pixels=False, down_to_block=last).attention[last]
        return class_token_row(relevance.clamp(min=0).mean(dim=1), classifier.module), logits, targets
