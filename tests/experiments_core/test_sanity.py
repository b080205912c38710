import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn

from experiments.core.metrics.sanity import (
    SanityRecord,
    aggregate_sanity,
    hog_similarity,
    randomizable_layers,
    randomization_steps,
    sanity_records,
    spearman,
    ssim,
)
from experiments.core.protocols import copy_protocol, get_protocol

from .conftest import tiny_cnn

PROTOCOL = get_protocol("adebayo-v1")


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a, b = np.round(rng.random((20, 20)), 1), np.round(rng.random((20, 20)) + 0.3 * rng.random((20, 20)), 1)
    assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5)))


@pytest.mark.parametrize("seed", range(3))
def test_ssim_matches_scikit_image_gaussian_weights(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((48, 56))
    b = np.clip(a + 0.3 * rng.standard_normal((48, 56)), 0, 1)
    theirs = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert ssim(a, b) == pytest.approx(theirs, abs=1e-10)
    assert ssim(a, a) == pytest.approx(1.0)


def test_hog_similarity_is_spearman_of_16px_hog_features():
    rng = np.random.default_rng(0)
    a, b = rng.random((64, 64)), rng.random((64, 64))
    kw = dict(orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2))
    expected = spearmanr(hog(a, **kw), hog(b, **kw)).statistic
    assert hog_similarity(a, b) == pytest.approx(expected, abs=1e-12)


def test_layers_are_parameterised_non_norm_modules_in_call_order(model):
    assert randomizable_layers(model, torch.rand(1, 3, 16, 16)) == ["0", "3", "7"]  # BatchNorm "1" excluded

    class Reversed(nn.Module):  # defined output layer first, called last
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)
            self.stem = nn.Linear(3, 4)

        def forward(self, x):
            return self.head(self.stem(x))

    assert randomizable_layers(Reversed(), torch.rand(1, 3)) == ["stem", "head"]


def params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def changed(before, module):
    after = module.state_dict()
    return sorted({k.split(".")[0] for k in before if not torch.equal(before[k], after[k])})


def test_cascading_randomises_from_the_output_one_more_per_step(model):
    layers = ["0", "3", "7"]
    original = params(model)
    seen = [changed(original, m) for _, _, m in randomization_steps(model, "cascading", layers, seed=3)]
    assert seen == [["7"], ["3", "7"], ["0", "3", "7"]]
    assert changed(original, model) == []  # the caller's model is untouched


def test_independent_randomises_one_layer_at_a_time_with_the_cascading_weights(model):
    layers = ["0", "3", "7"]
    original = params(model)
    independent = [(name, changed(original, m), params(m)[f"{name}.weight"]) for _, name, m in randomization_steps(model, "independent", layers, seed=3)]
    assert [c for _, c, _ in independent] == [["7"], ["3"], ["0"]]
    cascading = {name: params(m)[f"{name}.weight"] for _, name, m in randomization_steps(model, "cascading", layers, seed=3)}
    for name, _, weight in independent:
        assert torch.equal(weight, cascading[name])  # same seed per layer in both schedules
    assert changed(original, model) == []


def input_gradient(model, batch, targets):
    batch = batch.clone().requires_grad_(True)
    model(batch).gather(1, targets[:, None]).sum().backward()
    return batch.grad.sum(1)


def edge_detector(model, batch, targets):
    """Ignores the model entirely: the failure case the sanity checks exist to expose."""
    gray = batch.mean(1)
    return (gray[:, 1:, 1:] - gray[:, :-1, :-1]).abs()


def test_a_model_independent_map_stays_identical_at_every_step(model):
    batch = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    _, records, maps = sanity_records(model, batch, [0, 1], edge_detector, protocol=PROTOCOL)
    assert len(records) == 2 * 3 * 2  # modes × layers × images
    for r in records:
        assert r.spearman == pytest.approx(1.0) and r.ssim == pytest.approx(1.0) and r.hog == pytest.approx(1.0)
    assert len(maps["cascading"]) == 3 and maps["cascading"][0].shape == (2, 39, 39)


def test_gradient_maps_change_under_randomisation_and_the_model_is_unchanged():
    model = tiny_cnn(seed=1)
    before = params(model)
    batch = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    steps = []
    original, records, _ = sanity_records(model, batch, [0, 1, 2], input_gradient, protocol=PROTOCOL, seed=0,
                                          on_step=lambda mode, step, total: steps.append((mode, step, total)))
    assert changed(before, model) == [] and not model.training
    assert steps == [("cascading", 0, 3), ("cascading", 1, 3), ("cascading", 2, 3),
                     ("independent", 0, 3), ("independent", 1, 3), ("independent", 2, 3)]
    last = [r for r in records if r.mode == "cascading" and r.step == 2]
    assert all(r.spearman < 0.9 for r in last)
    for r in records:
        assert -1 <= r.spearman <= 1 and -1 <= r.spearman_abs <= 1 and -1 <= r.hog <= 1
    # deterministic given the seed
    _, again, _ = sanity_records(model, batch, [0, 1, 2], input_gradient, protocol=PROTOCOL, seed=0)
    assert [r.spearman for r in again] == pytest.approx([r.spearman for r in records])


def test_aggregate_mean_std_per_step_skipping_nans():
    nan = float("nan")
    records = [
        SanityRecord(0, "cascading", 0, "fc", 0.5, 0.4, 0.9, 0.2),
        SanityRecord(1, "cascading", 0, "fc", 0.7, nan, 0.7, 0.4),
        SanityRecord(0, "cascading", 1, "conv", 0.1, 0.0, 0.3, 0.0),
    ]
    out = aggregate_sanity(records)
    first = out["cascading"][0]
    assert first["layer"] == "fc" and first["n"] == 2
    assert first["spearman_abs"]["mean"] == pytest.approx(0.6) and first["spearman_abs"]["std"] == pytest.approx(0.1)
    assert first["spearman"] == {"mean": pytest.approx(0.4), "std": pytest.approx(0.0), "nan": 1}
    assert out["cascading"][1]["ssim"]["mean"] == pytest.approx(0.3)
    assert aggregate_sanity([r.to_dict() for r in records])["cascading"][0]["spearman"]["nan"] == 1


def test_only_one_mode_when_the_protocol_says_so(model):
    cascading_only = copy_protocol(PROTOCOL, "cascading-only", modes=("cascading",))
    _, records, maps = sanity_records(model, torch.rand(1, 3, 40, 40), [0], edge_detector, protocol=cascading_only)
    assert set(maps) == {"cascading"} and {r.mode for r in records} == {"cascading"}
