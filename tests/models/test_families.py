"""Every model family the workbench takes, as a tiny random instance, explained with every
method that family supports: maps of the input's size, finite, non-negative and not all zero
(a target layer whose patch tokens get no gradient gives zero maps), the model unchanged; and
the methods that cannot explain a family say why."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from explain.core import explain, method_support, methods_for, wrap_model


def tiny(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "convnext":
        return timm.create_model("convnext_atto", pretrained=False, num_classes=5)
    if family == "deit":
        return timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=5, depth=2)
    if family == "swin":
        return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5,
                                 depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1))
    if family == "resnet":
        return torchvision.models.resnet18(weights=None, num_classes=5)
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=5)


# What each family supports (the report's table): asserted, so a change shows up here.
EXPECTED_UNSUPPORTED = {
    "convnext": {"attention_rollout", "gradient_rollout", "partial_lrp", "transformer_attribution"},
    "resnet": {"attention_rollout", "gradient_rollout", "partial_lrp", "transformer_attribution"},
    "mobilenet": {"attention_rollout", "gradient_rollout", "partial_lrp", "transformer_attribution"},
    "deit": {"cameras", "gradcampp", "groupcam", "layercam", "msgcam", "scorecam", "xgradcam"},
    "swin": {"attention_rollout", "gradient_rollout", "partial_lrp", "transformer_attribution",
             "cameras", "msgcam", "lrp"},
}
# Group-CAM keeps only the groups whose masked image raises the target's probability above a
# blurred baseline; on these random MobileNet/Swin weights none does, so its map is all zero
# (not a zero-gradient layer: it uses no gradients of the map's layer for its scores). MSG-CAM
# scores its multi-scale groups the same way, so on the random MobileNet it may be zero too.
# Score-CAM weights each channel by the target's softmax score on the masked image; on the
# random MobileNet those scores are all but equal, and the ReLU of their sum can be exactly
# zero (it depends on the last bits of the thread count's summation order).
MAY_BE_ZERO = {("groupcam", "mobilenet"), ("groupcam", "swin"), ("msgcam", "mobilenet"),
               ("scorecam", "mobilenet")}
FAST = {"rise": {"masks": 64}, "scorecam": {"batch_size": 16}}


@pytest.mark.parametrize("family", sorted(EXPECTED_UNSUPPORTED))
def test_every_supported_method_explains_a_tiny_model(family):
    clf = wrap_model(tiny(family), name=family)
    support = method_support(clf)
    unsupported = {k for k, reason in support.items() if reason is not None}
    assert unsupported == EXPECTED_UNSUPPORTED[family], support
    assert all(support[k] for k in unsupported)            # each with a reason in words
    before = {k: v.clone() for k, v in clf.module.state_dict().items()}
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    for key in methods_for(clf):
        [e] = explain(clf, x, key, params=FAST.get(key))
        s = e.saliency
        assert s.shape == (224, 224), key
        assert torch.isfinite(s).all() and (s >= 0).all(), key
        assert s.sum() > 0 or (key, family) in MAY_BE_ZERO, f"{key} gives an all-zero map on {family}"
    assert all(torch.equal(before[k], v) for k, v in clf.module.state_dict().items())
    assert not clf.module.training
    for key in unsupported:
        with pytest.raises(ValueError, match="cannot explain"):
            explain(clf, x, key)


def test_swin_maps_are_channels_first_for_cams():
    clf = wrap_model(tiny("swin"), name="swin")
    assert clf.feature_layout == "NHWC" and clf.default_layers == {"cam": "norm"}
    from explain.core.methods.base import activations_and_gradients

    a, g, _, _ = activations_and_gradients(clf, torch.randn(1, 3, 224, 224), None, "norm")
    assert a.shape == g.shape == (1, clf.module.num_features, 7, 7)
    assert g.abs().sum() > 0
