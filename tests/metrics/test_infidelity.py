"""Infidelity: exact cases on a linear model, the optimal scaling, and Quantus 0.6.0 as an oracle.

Agreement with Quantus (Infidelity, abs=False, normalise=False, logits, fed our Gaussian
perturbations through ``perturb_func`` with one patch covering the 16×16 image so each of
its samples is one of ours; a one-channel tiny CNN, four random inputs, gradient maps, 10
perturbations of σ = 0.1): our ``scaling="none"`` score within 1e-6 relative on every image.
Where Quantus leaves the paper: no optimal scaling (tested on a map twice the gradient, whose
scaled infidelity is 0 and unscaled is not), and square-patch baselines instead of noise.

yeh-infidelity-v2 (float32 draws from torch's generator, float32 dot products): its draws are
checked as draws, and its score against the float64 formula evaluated by hand in numpy on the
same float32 draws; v1's draws are pinned to numpy's float64 generator.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from experiments.core.imageops import normalize
from experiments.core.metrics import ImageContext, get_family
from experiments.core.metrics.infidelity import gaussian_perturbations, infidelity
from experiments.core.protocols import (
    InfidelityProtocol,
    Preprocessing,
    copy_protocol,
    get_protocol,
    protocol_from_dict,
)

from .conftest import MEAN, STD, gradient_explainer, synthetic_sample, tiny_cnn


def linear_model(seed: int = 0, size: int = 8):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 1, bias=False)).double()
    return model, model[1].weight.data.view(size, size).clone()


def test_the_gradient_of_a_linear_model_has_zero_infidelity():
    """f(x) = wᵀx: f(x) − f(x − I) = wᵀI = Iᵀφ exactly for φ = w, whatever I is."""
    model, w = linear_model()
    pixels = torch.rand(1, 8, 8, dtype=torch.float64)
    perts = gaussian_perturbations((1, 8, 8), samples=20, sigma=0.1, seed=1)
    for scaling in ("optimal", "none"):
        score, beta, dots, drops = infidelity(model, pixels, w, 0, perturbations=perts, mean=(0,), std=(1,), scaling=scaling)
        assert score == pytest.approx(0.0, abs=1e-10)
        np.testing.assert_allclose(dots, drops, atol=1e-10)
    assert beta == 1.0


def test_optimal_scaling_removes_a_wrong_scale_and_no_scaling_does_not():
    model, w = linear_model(1)
    pixels = torch.rand(1, 8, 8, dtype=torch.float64)
    perts = gaussian_perturbations((1, 8, 8), samples=2000, sigma=0.1, seed=2)
    scaled, beta, _, _ = infidelity(model, pixels, 2 * w, 0, perturbations=perts, mean=(0,), std=(1,))
    assert scaled == pytest.approx(0.0, abs=1e-10) and beta == pytest.approx(0.5)
    raw, _, _, drops = infidelity(model, pixels, 2 * w, 0, perturbations=perts, mean=(0,), std=(1,), scaling="none")
    # (2wᵀI − wᵀI)² = (wᵀI)²: on average σ²‖w‖²
    assert raw == pytest.approx(float(np.mean(drops ** 2)), rel=1e-6)
    assert raw == pytest.approx(0.01 * float((w ** 2).sum()), rel=0.1)
    # an all-zero map: β = 0 and the score is the mean squared drop
    zero, beta, _, _ = infidelity(model, pixels, torch.zeros(8, 8), 0, perturbations=perts, mean=(0,), std=(1,))
    assert beta == 0.0 and zero == pytest.approx(float(np.mean(drops ** 2)))


def test_gradient_times_input_is_not_optimal_for_gaussian_noise():
    """Exact value by hand: with φ = w ⊙ x, Iᵀφ − wᵀI = Σ w (x − 1) I."""
    model, w = linear_model(2, size=4)
    pixels = torch.rand(1, 4, 4, dtype=torch.float64)
    perts = gaussian_perturbations((1, 4, 4), samples=5, sigma=0.1, seed=3)
    raw, _, _, _ = infidelity(model, pixels, w * pixels[0], 0, perturbations=perts, mean=(0,), std=(1,), scaling="none")
    by_hand = np.mean([float((w * (pixels[0] - 1) * torch.from_numpy(p[0])).sum()) ** 2 for p in perts])
    assert raw == pytest.approx(by_hand, rel=1e-6) and raw > 0          # maps are float32


def test_perturbations_are_seeded_gaussian_and_cost_is_declared():
    a = gaussian_perturbations((3, 16, 16), samples=50, sigma=0.1, seed=4, index=2)
    np.testing.assert_array_equal(a, gaussian_perturbations((3, 16, 16), samples=50, sigma=0.1, seed=4, index=2))
    assert a.shape == (50, 3, 16, 16) and a.std() == pytest.approx(0.1, rel=0.05)
    cost = get_family("infidelity").cost(get_protocol("yeh-infidelity-v1"))
    assert cost.explainer_runs == 1 and cost.model_passes == 11


def test_matches_quantus_without_scaling():
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn(channels=1)
    torch.manual_seed(7)
    x = torch.rand(4, 1, 16, 16)
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())
    for i in range(len(x)):
        perts = gaussian_perturbations((1, 16, 16), samples=10, sigma=0.1, seed=0, index=i)
        served = iter(perts)

        def perturb(arr, indices, **kwargs):
            return arr - next(served).reshape(1, -1)            # x − I_k: one of our samples per call

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = quantus.Infidelity(perturb_func=perturb, perturb_patch_sizes=[16], n_perturb_samples=10,
                                        abs=False, normalise=False, disable_warnings=True)
            [q] = metric(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                         a_batch=a[i:i + 1, None].numpy(), device="cpu", softmax=False)
        ours, _, _, _ = infidelity(model, x[i], a[i], int(y[i]), perturbations=perts, mean=(0.0,), std=(1.0,),
                                   scaling="none")
        assert ours == pytest.approx(float(q), rel=1e-6, abs=1e-9)
        scaled, _, _, _ = infidelity(model, x[i], a[i], int(y[i]), perturbations=perts, mean=(0.0,), std=(1.0,))
        assert scaled <= ours + 1e-12                           # β* minimises the same sum


def test_v1_draws_are_numpys_float64_and_v2_draws_are_seeded_float32():
    v1 = gaussian_perturbations((3, 16, 16), samples=50, sigma=0.1, seed=4, index=2)
    expected = np.random.default_rng(4 * 1_000_003 + 2).standard_normal((50, 3, 16, 16)) * 0.1
    assert v1.dtype == np.float64
    np.testing.assert_array_equal(v1, expected)                 # v1 as it always was, bit for bit
    v2 = gaussian_perturbations((3, 16, 16), samples=50, sigma=0.1, seed=4, index=2, dtype="float32")
    assert v2.dtype == np.float32 and v2.shape == (50, 3, 16, 16) and v2.flags.c_contiguous
    np.testing.assert_array_equal(v2, gaussian_perturbations((3, 16, 16), samples=50, sigma=0.1, seed=4, index=2,
                                                             dtype="float32"))
    other = gaussian_perturbations((3, 16, 16), samples=50, sigma=0.1, seed=4, index=3, dtype="float32")
    assert not np.array_equal(v2, other)
    assert not np.allclose(v2, v1, atol=1e-3)                   # another generator, not v1's rounded
    # 38 400 draws: the mean's standard error is σ/196 ≈ 5e-4
    assert float(v2.astype(np.float64).mean()) == pytest.approx(0.0, abs=3e-3)
    assert float(v2.astype(np.float64).std()) == pytest.approx(0.1, rel=0.02)
    with pytest.raises(ValueError, match="dtype must be one of 'float64', 'float32'"):
        gaussian_perturbations((1, 4, 4), samples=2, sigma=0.1, seed=0, dtype="float16")


def by_hand(logits: np.ndarray, target: int, perts: np.ndarray, saliency: np.ndarray, scaling: str) -> float:
    """The module docstring's formula, every step in numpy float64."""
    drops = logits[0, target] - logits[1:, target]
    dots = np.array([float((p.astype(np.float64) * saliency.astype(np.float64)[None]).sum()) for p in perts])
    beta = float((dots * drops).sum() / (dots * dots).sum()) if scaling == "optimal" else 1.0
    return float(np.mean((beta * dots - drops) ** 2))


def test_v2_equals_the_float64_formula_on_its_float32_draws():
    model = tiny_cnn()
    torch.manual_seed(8)
    x = torch.rand(3, 3, 16, 16)
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())
    for i in range(len(x)):
        perts = gaussian_perturbations((3, 16, 16), samples=10, sigma=0.1, seed=5, index=i, dtype="float32")
        with torch.no_grad():                                   # the batch the metric feeds the model
            logits = model(normalize(torch.cat([x[i][None], x[i][None] - torch.from_numpy(perts)]), MEAN, STD))
        for scaling in ("optimal", "none"):
            score, beta, dots, drops = infidelity(model, x[i], a[i], int(y[i]), perturbations=perts, mean=MEAN,
                                                  std=STD, scaling=scaling)
            assert dots.dtype == drops.dtype == np.float64 and dots.shape == (10,)
            expected = by_hand(logits.double().numpy(), int(y[i]), perts, a[i].numpy(), scaling)
            assert score == pytest.approx(expected, rel=1e-5) and score > 0


def test_the_gradient_of_a_linear_model_has_zero_infidelity_with_float32_draws():
    model, w = linear_model(3)
    pixels = torch.rand(1, 8, 8, dtype=torch.float64)
    perts = gaussian_perturbations((1, 8, 8), samples=20, sigma=0.1, seed=6, dtype="float32")
    score, beta, dots, drops = infidelity(model, pixels, w, 0, perturbations=perts, mean=(0,), std=(1,))
    np.testing.assert_allclose(dots, drops, rtol=1e-5, atol=1e-7)    # float32 map and dots, float64 model
    assert beta == pytest.approx(1.0, rel=1e-5) and score == pytest.approx(0.0, abs=1e-12)


def test_the_protocols_draw_their_declared_noise():
    v1, v2 = get_protocol("yeh-infidelity-v1"), get_protocol("yeh-infidelity-v2")
    assert v1.noise == "float64" and v2.noise == "float32"
    assert v2.params() == {**v1.params(), "noise": "float32"}   # the same protocol but for the draws
    stored = v1.to_dict()
    del stored["params"]["noise"]                               # a result stored before the field existed
    assert protocol_from_dict(stored) == v1
    model = tiny_cnn()
    sample = synthetic_sample(seed=3)
    for protocol, dtype in ((v1, "float64"), (v2, "float32")):
        small = copy_protocol(protocol, f"{protocol.name}-small", preprocessing=Preprocessing("square", 32))
        ctx = ImageContext(model=model, mean=MEAN, std=STD, sample=sample, image=sample.load_image(),
                           explainer=gradient_explainer, num_classes=5, seed=2, index=7)
        [row] = get_family("infidelity").run(small, ctx)
        pixels = ctx.pixels(small.preprocessing)
        perts = gaussian_perturbations(tuple(pixels.shape), samples=10, sigma=0.1, seed=2, index=7, dtype=dtype)
        score, _, _, _ = infidelity(model, pixels, row["saliency"], row["class_id"], perturbations=perts,
                                    mean=MEAN, std=STD)
        assert row["data"]["infidelity"] == pytest.approx(score, rel=1e-9)
    assert get_family("infidelity").cost(v2).model_passes == 11


def test_a_bad_noise_is_refused():
    with pytest.raises(ValueError, match="noise must be 'float64' or 'float32', not 'float16'"):
        InfidelityProtocol(name="x", noise="float16")
    with pytest.raises(ValueError, match="noise must be 'float64' or 'float32'"):
        copy_protocol("yeh-infidelity-v1", "my-infidelity", noise="double")
