"""Transformer Attribution (Chefer, Gur, Wolf, CVPR 2021)."""
from __future__ import annotations

from typing import ClassVar

import torch

from explain.core.methods.base import OwnForwardMethod, Param, batch_size_param, top1_if_none
from explain.core.registry import register_method
from explain.core.relevance.rollout import plus_identity, rollout
from explain.core.relevance.vit import class_token_row, propagate, trace_vit


@register_method("transformer_attribution")
class TransformerAttribution(OwnForwardMethod):
    """Transformer Attribution: attention relevance weighted by its gradient, rolled out over blocks.

    For every block ``b``: ``∇A_b = ∂F_c/∂A_b`` (gradient of the raw logit with respect to the
    attention probabilities) and ``R_b`` (LRP relevance at ``A_b``, propagated from a one-hot
    output with the α1β0 rules of :mod:`explain.core.relevance.vit`), both ``B×h×N×N``;
    ``Ā_b = I + mean_heads((∇A_b ⊙ R_b)⁺)``; ``C = Ā_B ⋯ Ā_{s+1}`` (last block leftmost, as in the
    authors' code and in attention rollout; the paper writes the product as
    ``Ā_1 · Ā_2 ⋯ Ā_B``). The map is the class-token row of ``C`` without the class token,
    on the patch grid (``B×g×g``); the engine upsamples it.

    One forward and one backward pass for the whole batch, on the timm model as loaded (the
    reference implementation rebuilds the ViT and explains one image at a time).
    Chefer, Gur, Wolf, "Transformer Interpretability Beyond Attention Visualization", CVPR 2021.

    Example::

        [e] = explain(vit_classifier, x, "transformer_attribution")   # e.saliency: 224×224
    """

    label: ClassVar[str] = "Transformer Attribution"
    families: ClassVar[frozenset[str]] = frozenset({"vit"})
    group = "transformer"
    uses_gradients: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        Param("start_block", "int", 0, minimum=0, maximum=1000,
              help="First block (0-based) included in the product; earlier blocks are left out "
                   "(the authors' start_layer, 0 in the paper)."),
        batch_size_param("images", keeps_activations=True),
    )

    def maps_and_logits(self, classifier, inputs, targets, params):
        model = classifier.module
        start = int(params.get("start_block", 0))
        if start >= len(model.blocks):
            raise ValueError(f"start_block must be below the model's {len(model.blocks)} blocks, not {start}")
        trace = trace_vit(model, inputs)
        logits = trace.logits.detach()
        targets = top1_if_none(logits, targets)
        gradients = trace.attention_gradients(targets)
        one_hot = torch.nn.functional.one_hot(targets.to(logits.device), logits.shape[1]).to(logits.dtype)
        relevances = propagate(trace, one_hot, to_pixels=False, down_to_block=start).attention
        mixing = [
            None if rel is None else plus_identity((grad * rel).clamp(min=0).mean(dim=1))
            for grad, rel in zip(gradients, relevances)
        ]
        return class_token_row(rollout(mixing, start), model), logits, targets
