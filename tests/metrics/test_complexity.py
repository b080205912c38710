"""Sparseness (Gini) and complexity (entropy): hand-computed cases and Quantus 0.6.0 as an oracle.

Agreement with Quantus (same tiny CNN, 4 random 16×16 inputs, gradient maps, abs=True,
normalise=False): entropy within 1e-9; Gini within 2e-5 (measured max 1.8e-5), all of it from
the 1e-7 Quantus adds to every value: with that epsilon applied to our input, within 1e-6.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from experiments.core.metrics.complexity import (
    aggregate_complexity,
    complexity_record,
    entropy,
    gini,
)

from .conftest import gradient_explainer, tiny_cnn


def test_gini_hand_cases():
    assert gini(np.ones((4, 4))) == pytest.approx(0.0)
    one_hot = np.zeros(10)
    one_hot[3] = 5.0
    assert gini(one_hot) == pytest.approx(9 / 10)           # (n − 1)/n
    # [1, 2, 3] sorted: ((2−3−1)·1 + (4−3−1)·2 + (6−3−1)·3) / (3·6) = (−2 + 0 + 6)/18
    assert gini([3.0, -1.0, 2.0]) == pytest.approx(4 / 18)   # |map|: the sign does not matter
    assert gini(np.zeros(5)) is None


def test_entropy_hand_cases():
    assert entropy(np.ones(8)) == pytest.approx(math.log(8))
    assert entropy([0.0, 2.0, 0.0]) == pytest.approx(0.0)
    # P = [1/4, 3/4]
    assert entropy([1.0, -3.0]) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert entropy(np.zeros(3)) is None


def test_aggregate_skips_undefined_maps():
    recs = [complexity_record(np.ones(4), 0).to_dict(), complexity_record(np.zeros(4), 0).to_dict(),
            complexity_record([0, 0, 0, 1.0], 1).to_dict()]
    agg = aggregate_complexity(recs)
    assert agg["n"] == 3 and agg["undefined"] == 1
    assert agg["gini"] == pytest.approx((0 + 0.75) / 2)
    assert agg["entropy"] == pytest.approx((math.log(4) + 0) / 2)


def quantus_inputs(n=4, size=16):
    model = tiny_cnn()
    torch.manual_seed(1)
    x = torch.randn(n, 3, size, size)
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())
    return model, x, y, a


def test_matches_quantus():
    quantus = pytest.importorskip("quantus")
    model, x, y, a = quantus_inputs()
    kwargs = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q_gini = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)(**kwargs)
        q_entropy = quantus.Complexity(abs=True, normalise=False, disable_warnings=True)(**kwargs)
    ours_gini = [gini(m) for m in a]
    ours_entropy = [entropy(m) for m in a]
    # the whole difference is Quantus's epsilon: with it added, the two agree to float32 precision
    np.testing.assert_allclose([gini(m.numpy().astype(np.float32) + np.float32(1e-7)) for m in a], q_gini, atol=1e-6)
    np.testing.assert_allclose(ours_gini, q_gini, atol=5e-5)
    np.testing.assert_allclose(ours_entropy, q_entropy, atol=1e-9)


def test_paper_formula_not_quantus_epsilon_on_sparse_maps():
    """Quantus adds 1e-7 before the Gini formula; on a map of tiny values with many zeros the
    paper's index is (n − 1)/n, Quantus's is far lower. We follow the paper."""
    quantus = pytest.importorskip("quantus")
    model, x, y, _ = quantus_inputs(n=1)
    a = np.zeros((1, 1, 16, 16), dtype=np.float32)
    a[0, 0, 3, 4] = 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.copy(), device="cpu")[0]
    n = 16 * 16
    assert gini(a[0, 0]) == pytest.approx((n - 1) / n)
    assert q < 0.5 * (n - 1) / n       # the epsilon, 256 × 1e-7 = 2.6e-5 ≫ 1e-6, flattens the map
