"""Every registered method, on every family it supports, obeys the engine's contract.

Shape, dtype, finite and non-negative maps; a batch gives the images' one-by-one maps; no
hook, gradient, requires_grad or training flag is left changed; a seed fixes random methods.
New methods are covered by registering them: the parametrisation reads the registry.
"""
from __future__ import annotations

import pytest
import torch

from explain.core.engine import explain
from explain.core.hooks import count_hooks
from explain.core.registry import get_method_class, method_keys, methods_for

from .conftest import tiny_cnn_classifier, tiny_vit_classifier

# Cheaper settings where the defaults are sized for 224×224 ImageNet models.
FAST = {
    "rise": {"masks": 24, "batch_size": 16},
    "cameras": {"scales": 3, "step": 24},
    "msgcam": {"scales": 3, "step": 24},
    "scorecam": {"batch_size": 7},   # not a divisor of the mask count: chunk edges get exercised
}

# Group-CAM and MSG-CAM zero every value at or below a percentile: a value tied with the
# threshold may fall on either side when batched convolutions round differently, so a few
# isolated pixels may differ there; everything else must agree.
THRESHOLDED = {"groupcam", "msgcam"}

CASES = [(key, family) for key in method_keys() for family in ("cnn", "vit")
         if family in get_method_class(key).families]


def classifier(family):
    return tiny_cnn_classifier() if family == "cnn" else tiny_vit_classifier()


def snapshot(module):
    return (
        {k: v.clone() for k, v in module.state_dict().items()},
        [(m, m.training) for m in module.modules()],
        [(p, p.requires_grad, p.grad) for p in module.parameters()],
    )


def assert_unchanged(module, snap):
    state, training, params = snap
    for k, v in module.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"
    for m, flag in training:
        assert m.training == flag
    for p, requires_grad, grad in params:
        assert p.requires_grad == requires_grad
        assert p.grad is grad
        assert not getattr(p, "_backward_hooks", None)
    assert count_hooks(module) == 0


def test_registry_lists_the_cnn_methods():
    for key in ("gradcam", "gradcampp", "xgradcam", "layercam", "scorecam", "groupcam", "msgcam", "cameras", "rise"):
        assert key in methods_for("cnn")
    assert "gradcam" in methods_for("vit") and "rise" in methods_for("vit")


def assert_same_map(key, a, b):
    scale = max(float(b.abs().max()), 1e-12)
    a, b = a / scale, b / scale
    if key in THRESHOLDED:
        close = torch.isclose(a, b, atol=2e-4, rtol=1e-3)
        assert close.float().mean() >= 0.99, f"{int((~close).sum())} pixels differ"
    else:
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("key,family", CASES)
def test_contract(key, family, images):
    clf = classifier(family)
    module = clf.module
    # A gradient left by the user must survive untouched.
    marker = torch.full_like(next(module.parameters()), 3.0)
    next(module.parameters()).grad = marker
    snap = snapshot(module)
    params = FAST.get(key)

    batch = explain(clf, images, key, params=params, seed=3)
    assert_unchanged(module, snap)
    assert next(module.parameters()).grad is marker
    assert len(batch) == len(images)
    for e in batch:
        assert e.saliency.shape == (32, 32)
        assert e.saliency.dtype == torch.float32
        assert torch.isfinite(e.saliency).all()
        assert (e.saliency >= 0).all()
        assert e.manifest["method"] == key and e.manifest["model"] == clf.name

    singles = [explain(clf, images[i:i + 1], key, params=params, seed=3)[0] for i in range(len(images))]
    for e, s in zip(batch, singles):
        assert e.target == s.target
        assert_same_map(key, e.saliency, s.saliency)

    again = explain(clf, images, key, params=params, seed=3)
    for e, a in zip(batch, again):
        torch.testing.assert_close(e.saliency, a.saliency)
    assert_unchanged(module, snap)


@pytest.mark.parametrize("key,family", CASES)
def test_explicit_targets_are_explained(key, family, images):
    clf = classifier(family)
    out = explain(clf, images[:2], key, params=FAST.get(key), targets=[4, 9])
    assert [e.target for e in out] == [4, 9]


@pytest.mark.parametrize("key,family", CASES)
def test_enhanced_contract(key, family, images):
    clf = classifier(family)
    snap = snapshot(clf.module)
    # 2×2 windows keep it quick; two windows per call exercise the chunking across images
    enhance = {"window": 16, "stride": 16, "radius": 6, "window_batch": 2}
    batch = explain(clf, images[:2], key, params=FAST.get(key), enhance=enhance, seed=1)
    assert_unchanged(clf.module, snap)
    singles = [explain(clf, images[i:i + 1], key, params=FAST.get(key), enhance=enhance, seed=1)[0] for i in range(2)]
    for e, s in zip(batch, singles):
        assert e.saliency.shape == (32, 32) and torch.isfinite(e.saliency).all()
        assert float(e.saliency.min()) >= 0 and float(e.saliency.max()) <= 1 + 1e-6
        assert_same_map(key, e.saliency, s.saliency)
        assert e.manifest["enhance"]["window"] == 16


def test_family_mismatch_names_the_supported_families(vit, images):
    with pytest.raises(ValueError, match=r"supports CNN models only"):
        explain(vit, images, "scorecam")


def test_exception_inside_a_method_releases_everything(cnn, images):
    snap = snapshot(cnn.module)
    with pytest.raises(ValueError, match="no layer"):
        explain(cnn, images, "gradcam", params={"layer": "nope"})
    with pytest.raises(ValueError, match="feature map"):
        explain(cnn, images, "gradcam", params={"layer": "fc"})   # B×C output, not a map
    assert_unchanged(cnn.module, snap)


def test_leak_a_thousand_calls(cnn):
    x = torch.randn(1, 3, 32, 32)
    snap = snapshot(cnn.module)
    for _ in range(1000):
        explain(cnn, x, "gradcam")
        assert count_hooks(cnn.module) == 0
    assert_unchanged(cnn.module, snap)


@pytest.mark.parametrize("key,family", CASES)
def test_logits_are_the_models_and_the_default_target_is_top1(key, family, images):
    # methods that take the logits from their own (hooked, canonized) forward pass must still
    # report the model's prediction
    clf = classifier(family)
    with torch.no_grad():
        expected = clf.module(images).float()
    for e, row in zip(explain(clf, images, key, params=FAST.get(key)), expected):
        torch.testing.assert_close(e.logits, row, atol=1e-4, rtol=1e-4)
        assert e.target == int(row.argmax())


def test_the_manifest_names_the_installed_library_versions(cnn, images):
    import importlib.metadata

    [e] = explain(cnn, images[:1], "gradcam")
    versions = e.manifest["versions"]
    for name in ("torchvision", "timm", "zennit"):
        assert versions[name] == importlib.metadata.version(name)
    assert versions["torch"] == torch.__version__
