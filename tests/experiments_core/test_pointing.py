import numpy as np
import pytest
import torch

from experiments.core.datasets import ObjectAnnotation, Sample
from experiments.core.metrics.pointing import (
    PointingRecord,
    aggregate_pointing,
    ebp_difficult,
    pointing_pairs,
    pointing_record,
)
from experiments.core.protocols import get_protocol

MAX = get_protocol("torchray-pointing-v1")
TOP = get_protocol("thesis-pointing-top100-v1")


def peak_at(x, y, h=100, w=120):
    sal = torch.zeros(h, w)
    sal[y, x] = 1.0
    return sal


def single_pixel_mask(x=50, y=50, h=100, w=120):
    mask = np.zeros((h, w), bool)
    mask[y, x] = True
    return mask


@pytest.mark.parametrize(
    "dx, dy, hit",
    [(14, 0, True), (15, 0, False), (0, -15, False), (0, 14, True), (9, 11, True), (9, 12, False), (12, 9, False), (10, 11, True)],
)
def test_tolerance_is_strictly_less_than_15_px(dx, dy, hit):
    # 9² + 12² = 15² exactly: a miss; 9² + 11² = 202 < 225: a hit; 10² + 11² = 221: a hit.
    rec = pointing_record(peak_at(50 + dx, 50 + dy), single_pixel_mask(), class_id=3, protocol=MAX)
    assert rec.score == (1.0 if hit else 0.0)
    assert rec.point == (50 + dx, 50 + dy)


def test_first_maximum_in_raster_order():
    sal = torch.zeros(100, 120)
    sal[10, 100] = 1.0  # first in raster order (row 10)
    sal[50, 50] = 1.0
    rec = pointing_record(sal, single_pixel_mask(), class_id=0, protocol=MAX)
    assert rec.point == (100, 10) and rec.score == 0.0


def brute_force_near(mask, tolerance):
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2
    return (d2 < tolerance ** 2).any(-1)


def test_top100_fraction_against_brute_force():
    rng = np.random.default_rng(0)
    mask = np.zeros((60, 70), bool)
    mask[20:30, 10:25] = True
    mask[45, 60] = True
    sal = torch.from_numpy(rng.random((60, 70)).astype(np.float32))
    near = brute_force_near(mask, 15)
    top = np.argsort(-sal.numpy().reshape(-1), kind="stable")[:100]
    expected = near.reshape(-1)[top].mean()
    rec = pointing_record(sal, mask, class_id=1, protocol=TOP)
    assert rec.score == pytest.approx(expected)
    assert 0 < rec.score < 1


def test_top100_hand_counted():
    sal = torch.zeros(100, 120)
    sal[0, :40] = 2.0   # 40 pixels at rows 0, x < 40: within 15 px of the band below only when... far away
    sal[60, :60] = 1.0  # 60 pixels on row 60
    mask = np.zeros((100, 120), bool)
    mask[70:, :] = True  # row 60 is 10 px away (hit); row 0 is 70 px away (miss)
    assert pointing_record(sal, mask, class_id=0, protocol=TOP).score == pytest.approx(0.6)


def test_map_is_resized_to_the_image():
    sal = torch.zeros(10, 12)
    sal[9, 11] = 1.0  # bottom-right corner at low resolution
    mask = np.zeros((100, 120), bool)
    mask[-5:, -5:] = True
    rec = pointing_record(sal, mask, class_id=0, protocol=MAX)
    assert rec.point[0] > 100 and rec.point[1] > 80 and rec.score == 1.0


def test_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        pointing_record(torch.rand(10, 10), np.zeros((10, 10), bool), class_id=0, protocol=MAX)


def test_pairs_skip_classes_whose_boxes_are_all_difficult():
    sample = Sample(
        key="x",
        labels=(0, 1, 2),
        size=(100, 80),
        objects=(
            ObjectAnnotation(0, (0, 0, 10, 10), difficult=True),
            ObjectAnnotation(1, (10, 10, 90, 70), difficult=True),
            ObjectAnnotation(1, (0, 0, 5, 5), difficult=False),
            ObjectAnnotation(2, (0, 0, 100, 80)),
        ),
    )
    pairs = {c: (m, d) for c, m, d in pointing_pairs(sample, MAX)}
    assert set(pairs) == {1, 2}  # class 0 only has a difficult box
    assert pairs[1][0].sum() == 80 * 60 + 25 - 0  # union of both boxes of class 1 (disjoint)
    assert pairs[1][1] is False  # covers 60 % of the image
    assert pairs[2][1] is False
    assert ebp_difficult(np.pad(np.ones((5, 5), bool), ((0, 20), (0, 20))), [0, 4], 0) is True
    assert ebp_difficult(np.pad(np.ones((5, 5), bool), ((0, 20), (0, 20))), [0], 0) is False


def test_aggregate_is_the_mean_of_per_class_accuracies():
    records = [
        PointingRecord(0, 1.0, (0, 0)), PointingRecord(0, 0.0, (0, 0), difficult=True),
        PointingRecord(1, 1.0, (0, 0)),
        PointingRecord(2, 1.0, (0, 0), difficult=True), PointingRecord(2, 1.0, (0, 0)), PointingRecord(2, 0.0, (0, 0)),
    ]
    out = aggregate_pointing(records, ["a", "b", "c"])
    # per class 50, 100, 66.7 → mean 72.2 (pooled would be 4/6 = 66.7)
    assert out["all"]["score"] == pytest.approx((50 + 100 + 200 / 3) / 3)
    assert out["all"]["per_class"] == pytest.approx({"a": 50.0, "b": 100.0, "c": 200 / 3})
    assert out["difficult"]["score"] == pytest.approx(50.0) and out["difficult"]["n"] == 2
    assert aggregate_pointing([r.to_dict() for r in records], ["a", "b", "c"]) == out
