"""Faithfulness correlation: hand-checked on a linear model, and Quantus 0.6.0 as an oracle.

Agreement with Quantus (FaithfulnessCorrelation, nr_runs=20, subset_size=16, black baseline,
abs=False, normalise=False, logits; a one-channel tiny CNN, where Quantus's features are our
pixels, 3 random 12×12 inputs with a zero pixel so "black" = 0, gradient maps, the
subsets Quantus drew): correlation within 1e-6 on every image.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from experiments.core.metrics.faithfulness import (
    faithfulness_correlation,
    pearson,
    random_subsets,
)

from .conftest import gradient_explainer, tiny_cnn


def test_linear_model_with_its_exact_attribution_correlates_perfectly():
    """For f(x) = Σ w_i x_i and m = w ⊙ x, the drop of setting S to 0 is exactly Σ_S m: ρ = 1."""
    torch.manual_seed(0)
    w = torch.randn(1, 64, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1, bias=False)).double()
    model[1].weight.data = w
    pixels = torch.rand(1, 8, 8, dtype=torch.float64)
    saliency = (w.view(8, 8) * pixels[0])
    subsets = random_subsets(64, 10, 30, seed=1)
    corr, sums, drops = faithfulness_correlation(model, pixels, saliency, 0, subsets=subsets, mean=(0,), std=(1,))
    np.testing.assert_allclose(sums, drops, atol=1e-12)
    assert corr == pytest.approx(1.0)
    anti, _, _ = faithfulness_correlation(model, pixels, -saliency, 0, subsets=subsets, mean=(0,), std=(1,))
    assert anti == pytest.approx(-1.0)


def test_pearson_and_subsets():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    s = random_subsets(50, 7, 5, seed=3, index=2)
    assert s.shape == (5, 7) and all(len(set(row)) == 7 for row in s) and s.max() < 50
    np.testing.assert_array_equal(s, random_subsets(50, 7, 5, seed=3, index=2))


def test_all_channels_of_a_pixel_are_removed():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4, 1, bias=False)).double()
    model[1].weight.data = torch.ones(1, 12, dtype=torch.float64)
    pixels = torch.ones(3, 2, 2, dtype=torch.float64)
    _, _, drops = faithfulness_correlation(model, pixels, torch.ones(2, 2), 0, subsets=np.array([[0], [3]]),
                                           mean=(0, 0, 0), std=(1, 1, 1))
    np.testing.assert_allclose(drops, [3.0, 3.0])      # three channels of one pixel each


def test_matches_quantus_on_one_channel_inputs(monkeypatch):
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn(channels=1)
    torch.manual_seed(4)
    x = torch.rand(3, 1, 12, 12)
    x[:, :, 0, 0] = 0.0
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())
    runs, size = 20, 16
    for i in range(len(x)):
        # the subsets Quantus draws, recorded as it draws them, become ours
        drawn, choice = [], np.random.choice
        monkeypatch.setattr(np.random, "choice", lambda *args, **kw: drawn.append(choice(*args, **kw)) or drawn[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, perturb_baseline="black", abs=False,
                                                     normalise=False, return_aggregate=False, disable_warnings=True)
            [q] = metric(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                         a_batch=a[i:i + 1, None].numpy(), device="cpu", softmax=False)
        monkeypatch.setattr(np.random, "choice", choice)
        subsets = np.stack(drawn)
        assert subsets.shape == (runs, size)
        ours, _, _ = faithfulness_correlation(model, x[i], a[i], int(y[i]), subsets=subsets, mean=(0.0,), std=(1.0,))
        assert ours == pytest.approx(float(q), abs=1e-6)
