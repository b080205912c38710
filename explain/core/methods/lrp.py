"""Layer-wise relevance propagation (Bach et al., PLoS ONE 2015) for CNNs and ViTs."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.handle import Classifier
from explain.core.methods.base import OwnForwardMethod, Param, batch_size_param, cpu_channels_last, top1_if_none
from explain.core.registry import register_method
from explain.core.relevance.cnn import COMPOSITES, cnn_relevance
from explain.core.relevance.vit import propagate, trace_vit


def input_bounds(classifier: Classifier, like: Tensor) -> tuple[Tensor, Tensor]:
    """The normalised values of an all-black and an all-white pixel, ``1×3×1×1`` each (z^B bounds)."""
    zeros = torch.zeros(1, 3, 1, 1, device=like.device, dtype=like.dtype)
    return classifier.normalize(zeros), classifier.normalize(zeros + 1)


def target_logit_relevance(logits: Tensor, targets: Tensor) -> Tensor:
    """``B×C`` output relevance: the target's logit at the target, zero elsewhere."""
    mask = torch.nn.functional.one_hot(targets.to(logits.device), logits.shape[1]).to(logits.dtype)
    return mask * logits


@register_method("lrp")
class LRP(OwnForwardMethod):
    """LRP: the target logit redistributed layer by layer down to the pixels, conserving its total.

    The relevance starts as the raw logit ``F_c(I)`` of the target class (all other outputs 0)
    and is passed backwards by rules that keep ``Σ R`` constant from layer to layer, so
    ``Σ_pixels R ≈ F_c(I)``. The map is ``max(0, Σ_channels R)`` (``B×S×S``): the pixels that
    are positive evidence for the class. Negative relevance (evidence against) is not shown;
    where the logit itself is negative, the rules below carry its sign and the map is mostly
    zero — the model has no positive evidence for that class.

    - CNN: zennit with the composite chosen by ``composite`` (default ``epsilon_plus_box``:
      z^B at the first convolution with the bounds of a black and a white image, z⁺ = α1β0 in
      the other convolutions, ε in dense layers; biases left out of the rules unless
      ``ignore_bias`` is off) after folding batch norm into the convolutions
      and turning residual additions into sum modules (torchvision ResNet, timm EfficientNet);
      see :mod:`explain.core.relevance.cnn`.
    - ViT (timm ``VisionTransformer``): the propagation of Chefer, Gur, Wolf (CVPR 2021):
      α1β0 in every linear layer, LayerNorm/GELU/softmax passing relevance on, z-rule with
      halving in the two attention products, residual sums split by each operand's share of
      the absolute relevance and rescaled to conserve the total, z^B at the patch embedding;
      see :mod:`explain.core.relevance.vit`. ``composite`` and ``epsilon`` do not apply.
      Relevance taken by the learnt position embedding and class token is not shown.

    Example::

        from explain.core.engine import explain
        [e] = explain(classifier, x, "lrp")          # x: 1×3×224×224, normalised
        e.saliency.shape                             # torch.Size([224, 224])
    """

    label: ClassVar[str] = "LRP"
    families: ClassVar[frozenset[str]] = frozenset({"cnn", "vit"})
    group = "propagation"

    @classmethod
    def unsupported_reason(cls, classifier):
        # The CNN rules cover convolutions, linear layers and norms; Swin's windowed attention
        # (its NHWC stages) has no rule here, and relevance through it comes out unbounded.
        if classifier.feature_layout == "NHWC":
            return f"has no rules for the windowed attention of {classifier.name}"
        return super().unsupported_reason(classifier)
    uses_gradients: ClassVar[bool] = True
    folds_batch_norms_in_rules: ClassVar[bool] = True       # MergeBatchNormAtomic, CNNs only
    params: ClassVar[tuple[Param, ...]] = (
        Param("composite", "choice", "epsilon_plus_box", choices=COMPOSITES,
              help="CNN rule set: z^B at the input, z+ in convolutions, epsilon in dense layers "
                   "(epsilon_plus_box), or the flat rule at the input (epsilon_plus_flat). Ignored for ViTs."),
        Param("epsilon", "float", 1e-6, minimum=0.0, maximum=10.0,
              help="Stabiliser of the epsilon rule in the dense layers of a CNN (larger absorbs more "
                   "relevance, giving sparser maps). Ignored for ViTs."),
        Param("ignore_bias", "bool", True,
              help="Leave biases out of the CNN rules so the whole logit reaches the pixels (on); "
                   "off, biases absorb their share as in textbook LRP. ViT rules always leave them out."),
        batch_size_param("images", keeps_activations=True),
    )

    def maps_and_logits(self, classifier, inputs, targets, params):
        low, high = input_bounds(classifier, inputs)
        if classifier.family == "vit":
            # the ViT rules are applied explicitly (no autograd): no graph to build
            trace = trace_vit(classifier.module, inputs, with_grad=False)
            logits = trace.logits.detach()
            targets = top1_if_none(logits, targets)
            relevance = propagate(trace, target_logit_relevance(logits, targets), low=low, high=high).pixels
        else:
            chosen = {}

            def output_relevance(out: Tensor) -> Tensor:
                # the rules' own forward pass gives the logits, and the top-1 class from them
                chosen["targets"] = top1_if_none(out, targets)
                return target_logit_relevance(out, chosen["targets"])

            relevance, logits = cnn_relevance(
                classifier.module, cpu_channels_last(inputs), output_relevance,
                low=low, high=high, composite=params["composite"], epsilon=params["epsilon"],
                ignore_bias=params["ignore_bias"],
            )
            targets = chosen["targets"]
        return relevance.sum(dim=1).clamp(min=0), logits, targets
