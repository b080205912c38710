"""Gradient-weighted attention rollout (Chefer, Gur, Wolf, ICCV 2021)."""
from __future__ import annotations

from typing import ClassVar


from explain.core.methods.base import OwnForwardMethod, Param, batch_size_param, top1_if_none
from explain.core.registry import register_method
from explain.core.relevance.rollout import plus_identity, rollout
from explain.core.relevance.vit import class_token_row, trace_vit


@register_method("gradient_rollout")
class GradientRollout(OwnForwardMethod):
    """Attention weighted by its gradient, rolled out over blocks, without LRP.

    For every block ``Ā_b = mean_heads((∇A_b ⊙ A_b)⁺)`` with ``A_b`` the attention
    probabilities and ``∇A_b = ∂F_c/∂A_b`` the gradient of the raw target logit (``B×h×N×N``);
    the relevancy matrix starts as ``R = I`` and each block updates ``R ← R + Ā_b R``, i.e.
    ``R = (I + Ā_B) ⋯ (I + Ā_1)``. The map is the class-token row of ``R`` without the class
    token, on the patch grid (``B×g×g``). One forward and one backward pass for the batch.
    Chefer, Gur, Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
    Encoder-Decoder Transformers", ICCV 2021 (self-attention case, eq. 6–7).

    Example::

        [e] = explain(vit_classifier, x, "gradient_rollout")
    """

    label: ClassVar[str] = "Gradient Rollout"
    families: ClassVar[frozenset[str]] = frozenset({"vit"})
    group = "transformer"
    uses_gradients: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (batch_size_param("images", keeps_activations=True),)

    def maps_and_logits(self, classifier, inputs, targets, params):
        trace = trace_vit(classifier.module, inputs)
        logits = trace.logits.detach()
        targets = top1_if_none(logits, targets)
        gradients = trace.attention_gradients(targets)
        mixing = [
            plus_identity((grad * block.attn).clamp(min=0).mean(dim=1))
            for grad, block in zip(gradients, trace.blocks)
        ]
        return class_token_row(rollout(mixing), classifier.module), logits, targets
