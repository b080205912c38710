"""The gradient CAM family agrees with pytorch-grad-cam on the same model, layer and class.

Conditions matched: the same target layer, the raw logit of the same class as the score, the
same random inputs. pytorch-grad-cam min-max normalises each map at the layer's resolution and
resizes it with OpenCV (bilinear, half-pixel centres); our engine resizes the raw map with
``F.interpolate(align_corners=False)``. Pearson correlation is invariant to the affine
normalisation, so the maps are compared by Pearson after min-max normalisation.

Definitional differences, all negligible here:
- Grad-CAM++: pytorch-grad-cam adds 1e-6 to the denominator of ``α``; we set ``α = 0`` where
  the denominator is 0 instead. Both use ``α = G²/(2G² + Σ_ab A · G³)`` and ``ReLU(G)``.
  With random weights the gradients at EfficientNet's ``bn2`` are ~1e-4, so ``G² ≈ 1e-8``
  and that 1e-6 dominates the denominator; the random classifier heads are therefore scaled
  to give logits and gradients of the size trained models have (ours is unaffected by it).
- XGrad-CAM: pytorch-grad-cam adds 1e-7 to ``Σ_ab A``; we give weight 0 to a channel whose
  activations sum to 0.
- Both apply the ReLU to ``Σ_k w_k A_k`` at the layer's resolution, before resizing.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from explain.core.engine import explain
from explain.core.zoo import random_classifier

THEIRS = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM}
MODELS = {
    # model name -> (layer, input size): smaller inputs keep the random VGG affordable
    "vgg16": ("features.29", 128),
    "resnet18": ("layer4", 160),
    "efficientnet_lite0": ("bn2", 160),
}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = (a - a.min()) / (a.max() - a.min())
    b = (b - b.min()) / (b.max() - b.min())
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_case(request):
    name = request.param
    clf = random_classifier(name, seed=1)
    head = clf.module.get_classifier() if hasattr(clf.module, "get_classifier") else None
    if head is not None:
        with torch.no_grad():
            head.weight.mul_(100)
    layer, size = MODELS[name]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, size, size, generator=g)
    return clf, layer, x


@pytest.mark.parametrize("key", sorted(THEIRS))
def test_matches_pytorch_grad_cam(model_case, key):
    clf, layer, x = model_case
    ours = explain(clf, x, key, params={"layer": layer})
    targets = [e.target for e in ours]
    assert targets == clf.module(x).argmax(1).tolist()
    # The zoo freezes parameters; pytorch-grad-cam needs them to require grad to get a graph.
    frozen = [p for p in clf.module.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with THEIRS[key](model=clf.module, target_layers=[clf.layer(layer)]) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    finally:
        clf.module.zero_grad(set_to_none=True)   # it leaves parameter gradients behind
        for p in frozen:
            p.requires_grad_(False)
    for e, t in zip(ours, theirs):
        s = e.saliency.numpy()
        assert s.max() > s.min(), "a constant map would make the comparison vacuous"
        assert pearson(s, t) >= 0.999, f"{key} on {clf.name}: Pearson {pearson(s, t):.5f}"


def test_gradcam_on_vit_tokens_matches_pytorch_grad_cam():
    """Grad-CAM on a ViT: class token dropped, patch tokens reshaped to the grid (both sides)."""
    from .conftest import tiny_vit_classifier

    clf = tiny_vit_classifier()
    module = clf.module
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ours = explain(clf, x, "gradcam")

    def reshape(t):   # B×(1+16)×D → B×D×4×4, as pytorch-grad-cam's ViT tutorial does
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    for p in module.parameters():
        p.requires_grad_(True)
    try:
        with GradCAM(model=module, target_layers=[clf.layer("blocks.1.norm1")], reshape_transform=reshape) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(e.target) for e in ours])
    finally:
        module.zero_grad(set_to_none=True)
    for e, t in zip(ours, theirs):
        s = e.saliency.numpy()
        assert s.max() > s.min()
        assert pearson(s, t) >= 0.999
