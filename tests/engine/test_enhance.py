"""The sliding-window enhancement: window grid, coverage, α weights and the ideal low-pass."""
from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explain.core.engine import explain
from explain.core.enhance import (
    ideal_lowpass, resolve_enhance_params, window_positions,
)
from explain.core.handle import Classifier
from explain.core.methods.base import Method

KEEP_ALL = 1000.0   # a radius beyond every frequency: the low-pass is the identity


class ConstantMap(Method):
    """Returns 1 everywhere (not registered: used to read the enhancement's fusion)."""

    key: ClassVar[str] = "constant-test"
    families: ClassVar[frozenset[str]] = frozenset({"cnn"})

    def attribute(self, classifier, inputs, targets, params, generator):
        return torch.ones(inputs.shape[0], 7, 7)


def linear_classifier(size, seed=0, zero_weights=False):
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(3, 4, 1)), ("gap", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
        ("fc", nn.Linear(4, 5)),
    ])).double().eval()
    with torch.no_grad():
        model.fc.weight.mul_(0 if zero_weights else 20)
    return Classifier(name="linear", module=model, family="cnn", class_names=tuple("abcde"),
                      default_layers={"cam": "conv"}, input_size=size, resize_size=size)


def coverage(size, window, stride):
    c = np.zeros(size)
    for s in range(0, size - window + 1, stride):
        c[s:s + window] += 1
    return np.outer(c, c)


def test_window_grid_on_224():
    pos = window_positions(224, 224, 96, 32)
    assert len(pos) == 25
    assert pos[0] == (0, 0) and pos[4] == (0, 128) and pos[-1] == (128, 128)
    assert all(y + 96 <= 224 and x + 96 <= 224 for y, x in pos)
    with pytest.raises(ValueError, match="does not fit"):
        window_positions(64, 64, 96, 32)


def test_defaults_follow_the_spec():
    p = resolve_enhance_params(True)
    assert (p["window"], p["stride"], p["radius"]) == (96, 32, 35.0)
    assert resolve_enhance_params(None) is None and resolve_enhance_params(False) is None
    with pytest.raises(ValueError, match="no parameter"):
        resolve_enhance_params({"windw": 3})


def test_constant_map_gives_the_coverage_pattern():
    # With a constant model α_k = q for every window, so S' = (1 + q) · coverage.
    clf = linear_classifier(224, zero_weights=True)
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    [e] = explain(clf, x, ConstantMap(), enhance={"radius": KEEP_ALL})
    cov = coverage(224, 96, 32)
    assert cov.max() == 9 and cov.min() == 1
    np.testing.assert_allclose(e.saliency.numpy(), (cov - 1) / 8, atol=1e-6)


def test_window_weights_are_the_window_probabilities():
    clf = linear_classifier(64)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 3, 64, 64, generator=g, dtype=torch.float64) * 2
    target = 3
    [e] = explain(clf, x, ConstantMap(), targets=[target],
                  enhance={"window": 32, "stride": 16, "radius": KEEP_ALL})
    expected = np.zeros((64, 64))
    alphas = []
    for y, x0 in window_positions(64, 64, 32, 16):
        crop = F.interpolate(x[..., y:y + 32, x0:x0 + 32], size=(64, 64), mode="bilinear", align_corners=False)
        with torch.no_grad():
            alpha = torch.softmax(clf.module(crop), dim=1)[0, target].item()
        alphas.append(alpha)
        expected[y:y + 32, x0:x0 + 32] += alpha * 1.0 + 1.0
    assert max(alphas) - min(alphas) > 0.05, "windows must differ for the test to mean something"
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(e.saliency.numpy(), expected, atol=1e-5)


def test_ideal_lowpass_against_numpy_and_by_frequency():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(2, 224, 224, generator=g, dtype=torch.float64)
    spectrum = np.fft.fftshift(np.fft.fft2(m.numpy()), axes=(-2, -1))
    yy, xx = np.mgrid[:224, :224]
    spectrum[:, (yy - 112) ** 2 + (xx - 112) ** 2 > 35 ** 2] = 0
    expected = np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1))).real
    np.testing.assert_allclose(ideal_lowpass(m, 35).numpy(), expected, atol=1e-10)

    cols = torch.arange(224, dtype=torch.float64)
    low = torch.cos(2 * torch.pi * 10 * cols / 224).expand(224, 224)     # frequency 10 < 35: kept
    high = torch.cos(2 * torch.pi * 50 * cols / 224).expand(224, 224)    # frequency 50 > 35: removed
    torch.testing.assert_close(ideal_lowpass(low + high + 3, 35), low + 3)


def test_enhanced_map_is_normalised_and_wraps_a_registered_method():
    clf = linear_classifier(128)
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    out = explain(clf, x, "gradcam", enhance={"window": 64, "stride": 32})
    for e in out:
        assert float(e.saliency.min()) == pytest.approx(0.0, abs=1e-7)
        assert float(e.saliency.max()) == pytest.approx(1.0)
        assert e.manifest["enhance"] == {"window": 64, "stride": 32, "radius": 35.0, "window_batch": 25}
