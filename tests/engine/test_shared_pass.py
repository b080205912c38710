"""``explain_many``: methods that map the same layer's activations and gradients share one pass,
and their maps equal those each method computes alone."""
from __future__ import annotations

import pytest
import torch

from explain.core.engine import explain, explain_many, shared_pass_key
from explain.core.hooks import count_hooks
from explain.core.registry import get_method

CAMS = ["gradcam", "gradcampp", "xgradcam", "layercam"]


class ForwardCounter:
    """Counts the images that go through the model (a forward hook on the whole network)."""

    def __init__(self, module):
        self.passes = self.images = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.passes += 1
        self.images += inputs[0].shape[0]

    def close(self):
        self._handle.remove()


@pytest.fixture
def counted(cnn):
    counter = ForwardCounter(cnn.module)
    yield cnn, counter
    counter.close()


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_the_cam_family_shares_one_pass_and_each_map_equals_its_own(counted, images):
    clf, counter = counted
    targets = [3, 7, 1]
    alone = [explain(clf, images, key, targets=targets) for key in CAMS]
    assert counter.passes == len(CAMS)
    counter.passes = 0
    before = _state(clf.module)
    hooks = count_hooks(clf.module)

    got = list(explain_many(clf, images, CAMS, targets=targets))

    assert counter.passes == 1
    assert [i for i, _ in got] == list(range(len(CAMS)))
    for (i, mine), theirs in zip(got, alone):
        assert len(mine) == len(theirs) == len(images)
        for a, b in zip(mine, theirs):
            assert torch.equal(a.saliency, b.saliency), CAMS[i]
            assert torch.equal(a.logits, b.logits) and a.target == b.target
            assert a.manifest["method"] == CAMS[i]
            assert a.manifest["shared_pass"]["methods"] == CAMS
            assert a.manifest["seconds"] >= a.manifest["shared_pass"]["seconds"]
    assert count_hooks(clf.module) == hooks
    assert all(torch.equal(v, before[k]) for k, v in clf.module.state_dict().items())
    assert all(p.grad is None for p in clf.module.parameters())


def test_the_top1_class_is_chosen_once_for_all(counted, images):
    clf, counter = counted
    alone = [explain(clf, images, key)[1] for key in ("gradcam", "layercam")]
    got = dict(explain_many(clf, images, ["gradcam", "layercam"]))
    assert [got[0][1].target, got[1][1].target] == [e.target for e in alone]
    assert torch.equal(got[1][1].saliency, alone[1].saliency)


def test_other_methods_run_alone_in_order_and_unchanged(counted, images):
    clf, counter = counted
    keys = ["scorecam", "gradcam", "gradcam", "xgradcam"]
    params = [{"batch_size": 4}, None, None, None]
    enhance = [None, None, {"window": 16, "stride": 8, "radius": 8}, None]
    alone = [explain(clf, images[:1], k, targets=[2], params=p, enhance=e) for k, p, e in zip(keys, params, enhance)]
    images_alone = counter.images
    counter.images = counter.passes = 0

    got = list(explain_many(clf, images[:1], keys, targets=[2], params=params, enhance=enhance))

    # Score-CAM first, then the plain Grad-CAM with XGrad-CAM (their pass), then the enhanced Grad-CAM alone.
    assert [i for i, _ in got] == [0, 1, 3, 2]
    for i, [mine] in got:
        assert torch.allclose(mine.saliency, alone[i][0].saliency, atol=1e-6, rtol=0), keys[i]
    assert "shared_pass" in got[1][1][0].manifest and "shared_pass" not in got[3][1][0].manifest
    assert counter.images == images_alone - 1  # XGrad-CAM's own image is the one pass saved


def test_different_layers_do_not_share(counted, images):
    clf, counter = counted
    params = [{"layer": "relu2"}, {"layer": "conv1"}, {"layer": "relu2"}]
    keys = ["gradcam", "gradcam", "layercam"]
    got = dict(explain_many(clf, images, keys, targets=[0, 0, 0], params=params))
    assert counter.passes == 2
    assert shared_pass_key(get_method("gradcam"), {"layer": "relu2"}, None) != \
        shared_pass_key(get_method("gradcam"), {"layer": "conv1"}, None)
    lone = explain(clf, images, "gradcam", targets=[0, 0, 0], params={"layer": "conv1"})
    assert all(torch.equal(a.saliency, b.saliency) for a, b in zip(got[1], lone))


def test_a_bad_entry_fails_before_any_pass(counted, images):
    clf, counter = counted
    with pytest.raises(ValueError, match="no parameter"):
        list(explain_many(clf, images, ["gradcam", "xgradcam"], params=[None, {"nope": 1}]))
    with pytest.raises(ValueError, match="2 methods, 1 parameter sets"):
        list(explain_many(clf, images, ["gradcam", "xgradcam"], params=[None]))
    assert counter.passes == 0


def test_a_vit_shares_too(vit, images):
    # Grad-CAM on tokens: the only CAM of the family that runs on a ViT; the pass is the same.
    counter = ForwardCounter(vit.module)
    try:
        got = list(explain_many(vit, images, ["gradcam", "gradcam"], targets=[1, 2, 3]))
        assert counter.passes == 1
        [lone] = explain(vit, images[:1], "gradcam", targets=[1])
        assert torch.allclose(got[1][1][0].saliency, lone.saliency, atol=1e-6)
    finally:
        counter.close()
