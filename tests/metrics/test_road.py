"""ROAD: the noisy linear imputation against a direct solve and by hand, the removal orders,
and Quantus 0.6.0 as an oracle.

Agreement with Quantus (ROAD, percentages 10–50, 70, 90, noise 0 on both sides so the draws
do not matter, abs=False, normalise=False; a one-channel tiny CNN, eight random 16×16
Gaussian inputs, gradient maps, accuracy against the clean prediction): the MoRF accuracy at every
percentage is identical, and LeRF equals Quantus run on the reversed map (max − map). Its imputer alone
(``noisy_linear_imputation``, noise 0) matches ours within 1e-12 on colour images. Where
Quantus leaves the paper: on colour images its ROAD indexes ``C·H·W`` broadcast values into
an ``H·W`` imputer and fails (tested below); ours removes whole pixels.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from torch import nn

from experiments.core.metrics import get_family, road
from experiments.core.metrics.road import NEIGHBOUR_WEIGHTS, aggregate_road, noisy_linear_imputation, road_record
from experiments.core.protocols import copy_protocol, get_protocol

from .conftest import gradient_explainer, tiny_cnn


def direct_imputation(pixels: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The same system written pixel by pixel as a dense matrix and solved with numpy."""
    channels, height, width = pixels.shape
    unknowns = [(r, c) for r in range(height) for c in range(width) if removed[r, c]]
    number = {rc: i for i, rc in enumerate(unknowns)}
    a = np.zeros((len(unknowns), len(unknowns)))
    b = np.zeros((len(unknowns), channels))
    for i, (r, c) in enumerate(unknowns):
        for (dr, dc), w in NEIGHBOUR_WEIGHTS:
            rr, cc = r + dr, c + dc
            if not (0 <= rr < height and 0 <= cc < width):
                continue
            a[i, i] += w
            if removed[rr, cc]:
                a[i, number[(rr, cc)]] -= w
            else:
                b[i] += w * pixels[:, rr, cc]
    out = pixels.copy()
    solution = np.linalg.solve(a, b)
    for i, (r, c) in enumerate(unknowns):
        out[:, r, c] = solution[i]
    return out


def test_imputation_equals_a_direct_solve_on_a_4x4_image():
    rng = np.random.default_rng(0)
    pixels = rng.random((3, 4, 4))
    removed = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=bool)
    ours = noisy_linear_imputation(pixels, removed, noise=0.0)
    np.testing.assert_allclose(ours, direct_imputation(pixels, removed), atol=1e-12)
    np.testing.assert_array_equal(ours[:, ~removed], pixels[:, ~removed])     # kept pixels untouched


@pytest.mark.parametrize("shape", ["blob", "scattered"])
def test_large_imputations_by_multigrid_equal_the_lu_solve(shape, monkeypatch, caplog):
    """Above MULTIGRID_ABOVE unknowns the system is solved by multigrid-preconditioned CG: 90 % of
    a 224×224 image (45 158 unknowns), a removed blob and a scattered mask, against SuperLU."""
    rng = np.random.default_rng(3)
    pixels = rng.random((3, 224, 224))
    rows, cols = np.mgrid[:224, :224]
    relevance = -((rows - 100.0) ** 2 + (cols - 120.0) ** 2) if shape == "blob" else rng.random((224, 224))
    removed = np.zeros(224 * 224, dtype=bool)
    removed[np.argsort(-relevance.reshape(-1), kind="stable")[:int(0.9 * 224 * 224)]] = True
    removed = removed.reshape(224, 224)
    matrix, b, _ = road.imputation_system(pixels, removed)
    assert matrix.shape[0] > road.MULTIGRID_ABOVE
    lu = scipy.sparse.linalg.splu(matrix, permc_spec="NATURAL").solve(b)
    caplog.set_level("WARNING", logger=road.__name__)
    multigrid = road.solve_imputation(matrix, b)
    assert "did not converge" not in caplog.text          # the multigrid path, not its LU fallback
    np.testing.assert_allclose(multigrid, lu, rtol=0, atol=1e-9)
    if shape == "blob":
        # A solve that cannot reach its tolerance falls back to LU, with a warning, and loses nothing.
        monkeypatch.setattr(road, "MULTIGRID_TOLERANCE", 1e-30)
        np.testing.assert_array_equal(road.solve_imputation(matrix, b), lu)
        assert "did not converge" in caplog.text


def test_imputation_by_hand():
    x = np.arange(9, dtype=float).reshape(1, 3, 3)
    centre = np.zeros((3, 3), dtype=bool)
    centre[1, 1] = True
    # interior pixel: direct neighbours 1, 3, 5, 7 weigh 1/6, diagonal 0, 2, 6, 8 weigh 1/12
    expected = (1 + 3 + 5 + 7) / 6 + (0 + 2 + 6 + 8) / 12
    assert noisy_linear_imputation(x, centre, noise=0)[0, 1, 1] == pytest.approx(expected)
    corner = np.zeros((3, 3), dtype=bool)
    corner[0, 0] = True
    # corner pixel: only three neighbours inside, the weights renormalised by their sum 5/12
    expected = (1 / 6 * 1 + 1 / 6 * 3 + 1 / 12 * 4) / (5 / 12)
    assert noisy_linear_imputation(x, corner, noise=0)[0, 0, 0] == pytest.approx(expected)


def test_imputation_keeps_constants_and_interior_linear_ramps():
    constant = np.full((3, 8, 8), 0.3)
    mask = np.random.default_rng(1).random((8, 8)) < 0.7
    np.testing.assert_allclose(noisy_linear_imputation(constant, mask, noise=0), constant, atol=1e-12)
    rows, cols = np.mgrid[:8, :8]
    ramp = (0.05 * rows + 0.02 * cols)[None]
    interior = np.zeros((8, 8), dtype=bool)
    interior[2:6, 1:7] = True               # symmetric weights reproduce a plane away from the border
    np.testing.assert_allclose(noisy_linear_imputation(ramp, interior, noise=0), ramp, atol=1e-12)


def test_noise_is_seeded_and_has_the_protocol_scale():
    rng = np.random.default_rng(2)
    pixels = rng.random((3, 32, 32))
    mask = rng.random((32, 32)) < 0.5
    clean = noisy_linear_imputation(pixels, mask, noise=0)
    a = noisy_linear_imputation(pixels, mask, noise=0.01, rng=np.random.default_rng(7))
    b = noisy_linear_imputation(pixels, mask, noise=0.01, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    residual = (a - clean)[:, mask]
    assert residual.std() == pytest.approx(0.01, rel=0.1) and abs(residual.mean()) < 2e-3
    np.testing.assert_array_equal(a[:, ~mask], pixels[:, ~mask])
    with pytest.raises(ValueError, match="seeded rng"):
        noisy_linear_imputation(pixels, mask, noise=0.01)
    with pytest.raises(ValueError, match="at least one kept pixel"):
        noisy_linear_imputation(pixels, np.ones((32, 32), dtype=bool), noise=0)


def test_imputer_matches_quantus_on_colour_images():
    quantus = pytest.importorskip("quantus")
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    rng = np.random.default_rng(3)
    for trial in range(3):
        pixels = rng.random((3, 10, 12))
        mask = rng.random((10, 12)) < (0.2, 0.5, 0.9)[trial]
        theirs = quantus_imputation(pixels, np.flatnonzero(mask), noise=0.0)
        np.testing.assert_allclose(noisy_linear_imputation(pixels, mask, noise=0), theirs, atol=1e-12)
    assert quantus is not None


class Recorder(nn.Module):
    """The wrapped model, keeping every batch it is given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.batches = inner, []

    def forward(self, x):
        self.batches.append(x.detach().clone())
        return self.inner(x)


def test_morf_and_lerf_remove_whole_pixels_in_the_right_order(model):
    protocol = copy_protocol("road-v1", "road-small", fractions=(0.25, 0.5), reference="prediction")
    torch.manual_seed(0)
    pixels = torch.rand(3, 8, 8)
    saliency = torch.randperm(64).float().view(8, 8)         # no ties
    rec_model = Recorder(model)
    rec = road_record(rec_model, pixels, saliency, explained=1, label=None, protocol=protocol,
                      mean=(0, 0, 0), std=(1, 1, 1), seed=3, index=1)
    images = torch.cat(rec_model.batches)
    assert images.shape[0] == 1 + 2 * 2 and torch.equal(images[0], pixels)
    changed = (images[1:] != pixels).any(dim=1)
    assert torch.equal(changed, (images[1:] != pixels).all(dim=1))       # all channels of a pixel at once
    assert torch.equal(torch.from_numpy(np.stack(road.removal_masks(saliency, protocol))), changed)
    flat = saliency.reshape(-1)
    for row, (order, count) in enumerate([("morf", 16), ("morf", 32), ("lerf", 16), ("lerf", 32)]):
        gone = changed[row].reshape(-1)
        assert int(gone.sum()) == count
        if order == "morf":
            assert flat[gone].min() > flat[~gone].max()
        else:
            assert flat[gone].max() < flat[~gone].min()
    assert rec.reference == rec.clean and len(rec.morf) == len(rec.lerf_probability) == 2
    again = road_record(model, pixels, saliency, explained=1, label=None, protocol=protocol,
                        mean=(0, 0, 0), std=(1, 1, 1), seed=3, index=1)
    assert again == rec                                          # seeded


def test_aggregate_by_hand():
    protocol = copy_protocol("road-v1", "road-two", fractions=(0.5, 0.9))
    recs = [{"explained": 1, "reference": 1, "clean": 1, "fractions": [0.5, 0.9], "morf": [1, 0], "lerf": [1, 1],
             "morf_probability": [0.6, 0.2], "lerf_probability": [0.9, 0.8]},
            {"explained": 2, "reference": 3, "clean": 2, "fractions": [0.5, 0.9], "morf": [0, 0], "lerf": [3, 0],
             "morf_probability": [0.2, 0.0], "lerf_probability": [0.5, 0.4]}]
    agg = aggregate_road(recs, protocol)
    assert agg["morf_accuracy"] == [0.5, 0.0] and agg["lerf_accuracy"] == [1.0, 0.5]
    assert agg["morf"] == pytest.approx(25.0) and agg["lerf"] == pytest.approx(75.0) and agg["overall"] == pytest.approx(50.0)
    assert agg["clean_accuracy"] == 0.5 and agg["morf_probability"] == pytest.approx([0.4, 0.1])
    assert get_family("road").record_score(recs[0]) == pytest.approx(50.0)


def test_family_declares_labels_unless_compared_with_the_prediction():
    family = get_family("road")
    assert family.needs(get_protocol("road-v1")) == {"labels"}
    assert family.needs(copy_protocol("road-v1", "road-pred", reference="prediction")) == set()
    cost = family.cost(get_protocol("road-v1"))
    assert cost.model_passes == 2 * 7 + 1
    assert cost.cpu_seconds == pytest.approx(14 * road.IMPUTATION_SECONDS_224) and cost.cpu_seconds > 0  # the solves are in the estimate
    with pytest.raises(ValueError, match="fractions"):
        copy_protocol("road-v1", "road-bad", fractions=(0.5, 1.0))


def _quantus_road(quantus, model, x, y, a, percentages):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = quantus.ROAD(percentages=percentages, noise=0.0, abs=False, normalise=False, disable_warnings=True)
        return metric(model=model, x_batch=x, y_batch=y, a_batch=a, device="cpu")


def test_matches_quantus_on_one_channel_inputs():
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn(channels=1)
    torch.manual_seed(5)
    x = torch.randn(8, 1, 16, 16) * 2            # contrast enough for removals to change predictions
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())
    percentages = [10, 20, 30, 40, 50, 70, 90]
    protocol = copy_protocol("road-v1", "road-quantus", noise=0.0, reference="prediction")
    recs = [road_record(model, x[i], a[i], explained=int(y[i]), label=None, protocol=protocol, mean=(0.0,), std=(1.0,))
            for i in range(len(x))]
    agg = aggregate_road(recs, protocol)
    morf = _quantus_road(quantus, model, x.numpy(), y.numpy(), a[:, None].numpy(), percentages)
    # Quantus has MoRF only and refuses all-negative maps: the reversed order is max − map
    reversed_map = a.amax(dim=(1, 2), keepdim=True) - a
    lerf = _quantus_road(quantus, model, x.numpy(), y.numpy(), reversed_map[:, None].numpy(), percentages)
    assert agg["morf_accuracy"] == pytest.approx([float(morf[p]) for p in percentages], abs=1e-12)
    assert agg["lerf_accuracy"] == pytest.approx([float(lerf[p]) for p in percentages], abs=1e-12)
    assert min(agg["morf_accuracy"]) < 1.0          # the removals changed some predictions


def test_quantus_road_does_not_remove_whole_pixels_of_colour_images():
    """Quantus ranks the map broadcast to C·H·W values and passes those flat indices to an
    imputer over H·W pixels: an index from the second or third channel falls outside."""
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn()
    torch.manual_seed(6)
    x = torch.rand(2, 3, 12, 12)
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())
    with pytest.raises(IndexError, match="out of bounds"):
        _quantus_road(quantus, model, x.numpy(), y.numpy(), a[:, None].numpy(), [50])
    protocol = copy_protocol("road-v1", "road-colour", fractions=(0.5,), reference="prediction")
    rec = road_record(model, x[0], a[0], explained=int(y[0]), label=None, protocol=protocol, mean=(0, 0, 0), std=(1, 1, 1))
    assert len(rec.morf) == 1
