"""Max-sensitivity: hand-checked explainers, the family's extra explainer runs, and Quantus 0.6.0.

Agreement with Quantus (MaxSensitivity, similarity_func=difference, Frobenius norms,
abs=False, normalise=False, the same five perturbed inputs fed to both through its
``perturb_func``, gradient maps of a tiny CNN re-explained by the same explain_func, four
random 16×16 colour inputs, radius 0.02): the maximum within 1e-6 relative on every image.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from experiments.core.metrics import ImageContext, get_family
from experiments.core.metrics.sensitivity import max_sensitivity, uniform_perturbations
from experiments.core.protocols import Preprocessing, copy_protocol, get_protocol

from .conftest import MEAN, STD, gradient_explainer, synthetic_sample, tiny_cnn


def channel_sum(batch, targets):
    """A map that is the input itself summed over channels: its change is the noise's sum."""
    return batch.sum(dim=1)


def test_hand_checked_ratio():
    torch.manual_seed(0)
    pixels = torch.rand(3, 6, 6)
    perts = uniform_perturbations((3, 6, 6), samples=4, radius=0.05, seed=1)
    assert perts.shape == (4, 3, 6, 6) and np.abs(perts).max() <= 0.05
    clean = pixels.sum(0)
    worst, ratios = max_sensitivity(channel_sum, pixels, clean, 0, perturbations=perts, mean=(0, 0, 0), std=(1, 1, 1))
    by_hand = [np.linalg.norm(p.sum(0)) / np.linalg.norm(clean.double().numpy()) for p in perts]
    np.testing.assert_allclose(ratios, by_hand, rtol=1e-5)
    assert worst == pytest.approx(max(by_hand), rel=1e-5)


def test_an_input_independent_map_has_zero_sensitivity_and_a_zero_map_none():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))        # linear: the gradient never changes
    pixels = torch.rand(3, 8, 8)
    perts = uniform_perturbations((3, 8, 8), samples=3, radius=0.1, seed=2)
    [clean] = gradient_explainer(model, pixels[None], [2])
    worst, ratios = max_sensitivity(lambda b, t: gradient_explainer(model, b, t), pixels, clean, 2,
                                    perturbations=perts, mean=(0, 0, 0), std=(1, 1, 1))
    assert worst == pytest.approx(0.0, abs=1e-6) and len(ratios) == 3
    assert max_sensitivity(channel_sum, pixels, torch.zeros(8, 8), 0, perturbations=perts,
                           mean=(0, 0, 0), std=(1, 1, 1))[0] is None


def test_family_re_explains_every_perturbed_input_and_says_so_in_its_cost(model):
    protocol = copy_protocol("yeh-max-sensitivity-v1", "sens-small", preprocessing=Preprocessing("square", 32), samples=3)
    family = get_family("max-sensitivity")
    assert family.cost(protocol).explainer_runs == 4
    assert family.cost(get_protocol("yeh-max-sensitivity-v1")).explainer_runs == 6
    calls = []

    def counting(module, batch, targets):
        calls.append(len(targets))
        return gradient_explainer(module, batch, targets)

    sample = synthetic_sample()
    ctx = ImageContext(model=model, mean=MEAN, std=STD, sample=sample, image=sample.load_image(),
                       explainer=counting, num_classes=5, seed=0, index=0)
    [row] = family.run(protocol, ctx)
    assert sum(calls) == 1 + 3                      # the clean map and three perturbed inputs
    assert row["data"]["max_sensitivity"] > 0 and len(row["data"]["ratios"]) == 3


def test_matches_quantus():
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn()
    torch.manual_seed(3)
    x = torch.rand(4, 3, 16, 16)
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())

    def explain_func(model, inputs, targets, **kwargs):
        return gradient_explainer(model, torch.as_tensor(inputs).float(), np.asarray(targets).tolist())[:, None].numpy()

    for i in range(len(x)):
        perts = uniform_perturbations((3, 16, 16), samples=5, radius=0.02, seed=0, index=i)
        served = iter(perts)

        def perturb(arr, indices, **kwargs):
            return arr + next(served).reshape(1, -1)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = quantus.MaxSensitivity(nr_samples=5, perturb_func=perturb, abs=False, normalise=False,
                                            disable_warnings=True)
            [q] = metric(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                         a_batch=a[i:i + 1, None].numpy(), explain_func=explain_func, device="cpu")
        ours, _ = max_sensitivity(lambda b, t: gradient_explainer(model, b, t), x[i], a[i], int(y[i]),
                                  perturbations=perts, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        assert ours == pytest.approx(float(q), rel=1e-6)
