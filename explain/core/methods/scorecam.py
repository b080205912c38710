"""Score-CAM (Wang et al., CVPR Workshops 2020)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from explain.core.methods.base import (
    LAYER_PARAM, Method, Param, batch_size_param, layer_activations, target_probabilities,
)
from explain.core.ops import norm, upsample
from explain.core.registry import register_method


@register_method("scorecam")
class ScoreCam(Method):
    """Score-CAM: each channel weighted by the class probability of the image it unmasks.

    For each channel ``k`` of the layer's activations ``A`` (``K×h×w``):
    ``H_k = norm(up(A_k, S×S))``, ``α_k = softmax(F(I ⊙ H_k))_c − softmax(F(I_b))_c`` with the
    all-zero input ``I_b = I ⊙ 0`` as baseline (the paper's equation; ``baseline=false`` drops
    the term, as the authors' code does). Map ``ReLU(Σ_k α_k up(A_k))`` (``B×S×S``).
    Products and the zero baseline are taken in the model's (normalised) input space, so a
    masked pixel takes the data set's mean colour. Constant channels (``H_k`` all zero) get
    ``α_k = 0`` and cost no forward pass. ``K`` forward passes per image, in batches of
    ``batch_size``. Wang et al., CVPRW 2020. pytorch-grad-cam's ``ScoreCAM`` is a different
    variant (logits, then a softmax over channels).

    Example::

        [e] = explain(classifier, x, "scorecam", params={"baseline": False})
    """

    label: ClassVar[str] = "Score-CAM"
    families: ClassVar[frozenset[str]] = frozenset({"cnn"})
    group = "cam"
    folds_batch_norms: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        LAYER_PARAM,
        Param("baseline", "bool", True,
              help="Subtract the score of the all-zero input (paper); off: the authors' code."),
        batch_size_param(what="masked images"),
    )

    def attribute(self, classifier, inputs, targets, params, generator=None) -> Tensor:
        acts, _ = layer_activations(classifier, inputs, params["layer"])
        acts = acts.float()
        b, k, h, w = acts.shape
        size = inputs.shape[-2:]
        flat = acts.flatten(2)
        varying = flat.amax(dim=2) > flat.amin(dim=2)            # B×K: constant channels skipped
        pairs = varying.nonzero()                                # P×2 (image, channel)
        targets = targets.to(inputs.device)

        def build(sl: slice):
            idx = pairs[sl]
            masks = norm(upsample(acts[idx[:, 0], idx[:, 1]], size))          # n×S×S
            return inputs[idx[:, 0]] * masks.unsqueeze(1).to(inputs.dtype), targets[idx[:, 0]]

        scores = target_probabilities(classifier, build, len(pairs), params["batch_size"])
        alpha = torch.zeros(b, k, device=inputs.device)
        if params["baseline"]:
            zero = torch.zeros_like(inputs[:1])
            with torch.no_grad():
                base_probs = torch.softmax(classifier.module(zero).float(), dim=1)[0]
            scores = scores - base_probs[targets[pairs[:, 0]]]
        alpha[pairs[:, 0], pairs[:, 1]] = scores
        cam = torch.einsum("bk,bkhw->bhw", alpha, acts)
        return torch.relu(upsample(cam, size))
