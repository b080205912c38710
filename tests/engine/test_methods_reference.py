"""Score-CAM, Group-CAM, MSG-CAM, CAMERAS and RISE against plain step-by-step references.

The probe model is small enough to follow by hand: a 1×1 convolution (the explained layer,
``K = 4`` channels at input resolution), a 2×2 average pool, a linear layer, plus an optional
logit offset growing with the input size so that the top-1 class changes with the scale.
References loop over channels, groups, scales and masks one at a time, compute gradients with
plain autograd on the probe's parts (no hooks) and follow methods.md's formulas literally.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from explain.core.engine import explain
from explain.core.handle import Classifier
from explain.core.methods.msgcam import multiscale_captures
from explain.core.methods.rise import rise_grids, rise_masks

S = 16


class Probe(nn.Module):
    def __init__(self, seed=0, k=4, classes=3):
        super().__init__()
        torch.manual_seed(seed)
        self.feat = nn.Conv2d(3, k, 1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(4 * k, classes)
        with torch.no_grad():
            self.fc.weight.mul_(6)
        self.register_buffer("size_slope", torch.zeros(classes))

    def head(self, a):
        logits = self.fc(self.pool(a).flatten(1))
        return logits + self.size_slope * (a.shape[-1] - S)

    def forward(self, x):
        return self.head(self.feat(x))


def probe_classifier(model=None):
    model = (model or Probe()).double().eval()
    return Classifier(name="probe", module=model, family="cnn", class_names=("a", "b", "c"),
                      default_layers={"cam": "feat"}, input_size=S, resize_size=S)


def image(seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, S, S, generator=g, dtype=torch.float64)


def softmax_score(model, x, c):
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)[0, c].item()


def minmax(m):
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 0 else torch.zeros_like(m)


def grad_at_feat(model, x, c):
    a = model.feat(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.head(a)[0, c], a)
    return a.detach()[0], g[0]


# -- Score-CAM -------------------------------------------------------------------------------
def scorecam_reference(model, x, c, baseline):
    a = model.feat(x).detach()[0]                              # K×S×S (1×1 conv: input resolution)
    base = softmax_score(model, torch.zeros_like(x), c) if baseline else 0.0
    total = torch.zeros(S, S, dtype=torch.float64)
    for k in range(a.shape[0]):
        if a[k].max() == a[k].min():
            continue
        alpha = softmax_score(model, x * minmax(a[k]), c) - base
        total += alpha * a[k]
    return torch.relu(total)


@pytest.mark.parametrize("baseline", [True, False])
def test_scorecam_matches_reference(baseline):
    clf = probe_classifier()
    x = image()
    [e] = explain(clf, x, "scorecam", params={"baseline": baseline, "batch_size": 3})
    ref = scorecam_reference(clf.module, x, e.target, baseline)
    assert ref.max() > 0
    torch.testing.assert_close(e.saliency.double(), ref, atol=1e-6, rtol=1e-5)


def test_scorecam_variants_differ_by_the_baseline_term():
    clf = probe_classifier()
    x = image()
    with_base = explain(clf, x, "scorecam", params={"baseline": True})[0]
    without = explain(clf, x, "scorecam", params={"baseline": False})[0]
    assert not torch.allclose(with_base.saliency, without.saliency)


def test_scorecam_constant_channel_gets_no_weight():
    model = Probe()
    with torch.no_grad():
        model.feat.weight[2].zero_()                            # channel 2 = its bias everywhere
    clf = probe_classifier(model)
    x = image()
    [e] = explain(clf, x, "scorecam", params={"baseline": False})
    torch.testing.assert_close(e.saliency.double(), scorecam_reference(clf.module, x, e.target, False),
                               atol=1e-6, rtol=1e-5)


# -- Group-CAM -------------------------------------------------------------------------------
def groupcam_steps(model, x, c, a_bar, w, groups, q, kernel, sigma):
    """Group-CAM steps 2–5 on ``M = Ā·w`` (``Ā``: K×S×S), one group at a time."""
    m = a_bar * w[:, None, None]
    size = a_bar.shape[0] // groups
    blurred = gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    base = softmax_score(model, blurred, c)
    total = torch.zeros(S, S, dtype=torch.float64)
    for r in range(groups):
        mr = torch.relu(m[r * size:(r + 1) * size].sum(0))
        threshold = np.percentile(mr.numpy(), q)
        mr = torch.where(mr > threshold, mr, torch.zeros_like(mr))
        mn = minmax(mr)
        alpha = softmax_score(model, x * mn + blurred * (1 - mn), c) - base
        total += alpha * mr
    return torch.relu(total)


def test_groupcam_matches_reference():
    clf = probe_classifier()
    x = image()
    params = {"groups": 2, "percentile": 60, "blur_kernel": 5, "blur_sigma": 2.0, "batch_size": 1}
    [e] = explain(clf, x, "groupcam", params=params)
    a, g = grad_at_feat(clf.module, x, e.target)
    ref = groupcam_steps(clf.module, x, e.target, a, g.mean(dim=(1, 2)), 2, 60, 5, 2.0)
    assert ref.max() > 0
    torch.testing.assert_close(e.saliency.double(), ref, atol=1e-6, rtol=1e-5)


# -- multi-scale: MSG-CAM and CAMERAS --------------------------------------------------------
def scale_dependent_probe():
    """A probe whose top-1 class is c at sizes 16 and 20 and another class d from size 24 on."""
    model = Probe(seed=1).double().eval()
    x = image(5)
    with torch.no_grad():
        logits = model(x)[0]
    c, d = logits.argsort(descending=True)[:2].tolist()
    with torch.no_grad():
        model.size_slope[d] = (logits[c] - logits[d]) / 6    # tie at size 22
    return probe_classifier(model), x, c


def multiscale_reference(model, x, c, sizes, mode):
    acts, grads, valid = [], [], []
    for size in sizes:
        xt = F.interpolate(x, size=(size, size), mode=mode, align_corners=False)
        with torch.no_grad():
            valid.append(int(model(xt).argmax()) == c)
        a, g = grad_at_feat(model, xt, c)
        acts.append(F.interpolate(a[None], size=(S, S), mode="bilinear", align_corners=False)[0])
        grads.append(F.interpolate(g[None], size=(S, S), mode="bilinear", align_corners=False)[0])
    if not any(valid):
        valid[0] = True
    keep = [t for t, v in enumerate(valid) if v]
    a_bar = sum(acts[t] for t in keep) / len(keep)
    g_bar = sum(grads[t] for t in keep) / len(keep)
    return a_bar, g_bar, valid


def test_valid_scale_filter():
    clf, x, c = scale_dependent_probe()
    _, _, valid = multiscale_captures(clf, x, torch.tensor([c]), "feat", [16, 20, 24, 28], "bilinear", 8)
    assert valid[0].tolist() == [True, True, False, False]
    # a class that is top-1 at no scale falls back to the input scale alone
    other = ({0, 1, 2} - {c, int(clf.module(F.interpolate(x, size=(28, 28), mode="bilinear")).argmax())}).pop()
    _, _, valid = multiscale_captures(clf, x, torch.tensor([other]), "feat", [16, 20, 24, 28], "bilinear", 8)
    assert valid[0].tolist() == [True, False, False, False]


def test_msgcam_matches_reference():
    clf, x, c = scale_dependent_probe()
    params = {"scales": 4, "step": 4, "groups": 2, "percentile": 70, "blur_kernel": 5, "blur_sigma": 2.0,
              "batch_size": 2}
    [e] = explain(clf, x, "msgcam", params=params)
    assert e.target == c
    a_bar, g_bar, valid = multiscale_reference(clf.module, x, c, [16, 20, 24, 28], "bilinear")
    assert valid == [True, True, False, False]
    ref = groupcam_steps(clf.module, x, c, a_bar, g_bar.mean(dim=(1, 2)), 2, 70, 5, 2.0)
    assert ref.max() > 0
    torch.testing.assert_close(e.saliency.double(), ref, atol=1e-6, rtol=1e-5)


def test_cameras_matches_reference():
    clf, x, c = scale_dependent_probe()
    [e] = explain(clf, x, "cameras", params={"scales": 4, "step": 4, "channel_chunk": 3})
    a_bar, g_bar, valid = multiscale_reference(clf.module, x, c, [16, 20, 24, 28], "bicubic")
    assert valid[:2] == [True, True] and not any(valid[2:])
    ref = minmax(torch.relu((a_bar * g_bar).sum(0)))
    torch.testing.assert_close(e.saliency.double(), ref, atol=1e-6, rtol=1e-5)
    assert float(e.saliency.max()) == pytest.approx(1.0)


# -- RISE ------------------------------------------------------------------------------------
def test_rise_masks_by_hand():
    g = torch.Generator().manual_seed(0)
    grids, shifts = rise_grids(5, 2, 0.5, 4, g)
    assert set(grids.unique().tolist()) <= {0.0, 1.0}
    assert shifts.min() >= 0 and shifts.max() < 2                      # cell = ⌈4/2⌉ = 2
    masks = rise_masks(grids, shifts, 4)
    for i in range(5):
        big = F.interpolate(grids[i:i + 1], size=(6, 6), mode="bilinear", align_corners=False)[0, 0]
        y, x = shifts[i].tolist()
        torch.testing.assert_close(masks[i], big[y:y + 4, x:x + 4])
    one = torch.ones(1, 1, 2, 2)                                        # an all-kept grid is all ones
    assert torch.equal(rise_masks(one, torch.tensor([[1, 0]]), 4), torch.ones(1, 4, 4))


def test_rise_matches_reference_and_is_seeded():
    clf = probe_classifier()
    x = image()
    params = {"masks": 40, "cells": 4, "p": 0.5, "batch_size": 7}
    [e] = explain(clf, x, "rise", params=params, seed=5)
    g = torch.Generator().manual_seed(5)
    grids, shifts = rise_grids(40, 4, 0.5, S, g)
    masks = rise_masks(grids, shifts, S).double()
    ref = sum(softmax_score(clf.module, x * masks[i], e.target) * masks[i] for i in range(40)) / (40 * 0.5)
    torch.testing.assert_close(e.saliency.double(), ref, atol=1e-6, rtol=1e-5)
    other = explain(clf, x, "rise", params=params, seed=6)[0]
    assert not torch.allclose(other.saliency, e.saliency)


def test_rise_is_unbiased_for_a_constant_model():
    model = Probe()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    clf = probe_classifier(model)
    q = math.exp(2) / (1 + math.e + math.exp(2))
    [e] = explain(clf, image(), "rise", params={"masks": 2000, "cells": 4, "p": 0.5, "batch_size": 500},
                  targets=[2])
    # E[M_i] = p everywhere, so the map tends to the (constant) probability q
    assert float(e.saliency.mean()) == pytest.approx(q, rel=0.03)
