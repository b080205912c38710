"""The device-agreement check: its map comparison on hand-made cases and one run on the CPU."""
from __future__ import annotations

import pytest
import torch

from benchmarks.device_agreement import compare, map_agreement, markdown
from tests.engine.conftest import tiny_cnn_classifier


def test_map_agreement_on_hand_made_maps():
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert map_agreement([a], [a]) == (1.0, 0.0)
    pearson, diff = map_agreement([a], [2 * a])          # same shape, half the height
    assert pearson == pytest.approx(1.0) and diff == pytest.approx(0.5)
    pearson, diff = map_agreement([3 - a], [a])
    assert pearson == pytest.approx(-1.0) and diff == pytest.approx(1.0)
    flat = torch.ones(2, 2)
    assert map_agreement([flat], [flat]) == (1.0, 0.0)    # constant maps: equal or not, no NaN
    assert map_agreement([flat], [2 * flat])[0] == 0.0
    # the lowest Pearson and the largest difference over the images
    assert map_agreement([a, 3 - a], [a, a]) == (pytest.approx(-1.0), pytest.approx(1.0))


@pytest.mark.parametrize("key", ["gradcam", "rise", "lrp"])
def test_compare_on_the_cpu_finds_equal_maps_and_the_model_untouched(key):
    clf = tiny_cnn_classifier()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    row = compare(clf, clf, x, x.clone(), key, [1, 2], enhance=False)
    assert row["pearson_vs_cpu"] == pytest.approx(1.0) and row["max_diff_vs_cpu"] == 0.0
    assert row["batch_pearson"] > 0.9999 and row["model_unchanged"] is True
    assert -1.0 <= row["cpu_nudged_pearson"] <= 1.0
    text = markdown({"when": "now", "device": "cpu", "cpu_threads": 1, "tf32": {"matmul": False, "cudnn": True},
                     "versions": {}, "rows": [{"model": "tiny", "weights": "random", "method": key,
                                               "enhance": False, "same_top1": True, **row},
                                              {"model": "tiny", "weights": "random", "method": "x",
                                               "enhance": True, "same_top1": True, "error": "ValueError: no"}]})
    assert f"| tiny (random) | {key} | True | 1.000000 |" in text
    assert "| x + enhance | True | failed: ValueError: no |" in text
