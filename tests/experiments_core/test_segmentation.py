import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from experiments.core.metrics.segmentation import (
    SegmentationRecord,
    aggregate_segmentation,
    average_precision,
    segmentation_record,
)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.3
    scores = np.round(rng.random(500), 1 + seed % 2)  # many ties
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores), abs=1e-12)


def test_average_precision_without_positives_is_nan():
    assert np.isnan(average_precision(np.zeros(5, bool), np.arange(5.0)))


def test_record_hand_computed():
    sal = np.array([[0.0, 1.0], [2.0, 5.0]])  # min-max → [0, .2, .4, 1], mean .4 → only 5.0 is foreground
    gt = np.array([[False, False], [True, True]])
    rec = segmentation_record(sal, gt)
    # predicted fg = {(1,1)}; gt fg = {(1,0), (1,1)}
    assert rec.correct == 3 and rec.labeled == 4
    assert rec.intersection == (2, 1) and rec.union == (3, 2)
    scores = np.stack([1 - np.array([[0, .2], [.4, 1]]), np.array([[0, .2], [.4, 1]])])
    assert rec.ap == pytest.approx(average_precision_score(np.stack([~gt, gt]).reshape(-1), scores.reshape(-1)))


def test_threshold_is_the_mean_not_half():
    sal = np.array([[0.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3]])  # mean 0.275: the 0.3s are foreground
    gt = sal > 0.2
    rec = segmentation_record(sal, gt)
    assert rec.correct == 8


def test_constant_map_is_all_background():
    rec = segmentation_record(np.full((4, 4), 3.0), np.eye(4, dtype=bool))
    assert rec.correct == 12 and rec.intersection == (12, 0)


def test_aggregate_pools_counts_but_averages_ap():
    a = SegmentationRecord(correct=90, labeled=100, intersection=(50, 40), union=(60, 50), ap=0.5)
    b = SegmentationRecord(correct=1, labeled=4, intersection=(1, 0), union=(2, 3), ap=1.0)
    out = aggregate_segmentation([a, b])
    assert out["pixel_accuracy"] == pytest.approx(100 * 91 / 104)       # not (90 + 25) / 2
    assert out["iou_background"] == pytest.approx(100 * 51 / 62)
    assert out["iou_foreground"] == pytest.approx(100 * 40 / 53)
    assert out["miou"] == pytest.approx(50 * (51 / 62 + 40 / 53))
    assert out["map"] == pytest.approx(75.0)
    assert aggregate_segmentation([a.to_dict(), b.to_dict()]) == out
    assert aggregate_segmentation([])["miou"] is None
