"""Rankings across metrics on a hand-made table."""
from __future__ import annotations

import pytest

from experiments.core.rankings import rankings

TABLE = {
    "A": {"ins": 60.0, "del": 10.0, "point": 80.0},
    "B": {"ins": 50.0, "del": 12.0, "point": 80.0},
    "C": {"ins": 40.0, "del": 20.0, "point": 70.0},
    "D": {"ins": 30.0, "del": None, "point": 90.0},
}
BETTER = {"ins": "higher", "del": "lower", "point": "higher"}


def test_ranks_per_metric_with_ties_and_gaps():
    r = rankings(TABLE, BETTER)
    assert r["ranks"]["ins"] == {"A": 1, "B": 2, "C": 3, "D": 4}
    assert r["ranks"]["del"] == {"A": 1, "B": 2, "C": 3}            # D has no value: no rank
    assert r["ranks"]["point"] == {"D": 1, "A": 2.5, "B": 2.5, "C": 4}


def test_aggregate_rank_is_mean_with_spread():
    agg = {row["method"]: row for row in rankings(TABLE, BETTER)["aggregate"]}
    assert agg["A"]["mean_rank"] == pytest.approx((1 + 1 + 2.5) / 3)
    assert agg["D"]["mean_rank"] == pytest.approx(2.5) and agg["D"]["n"] == 2
    assert agg["D"]["spread"] == pytest.approx(1.5)                  # std of [4, 1]
    assert [row["method"] for row in rankings(TABLE, BETTER)["aggregate"]] == ["A", "B", "D", "C"]


def test_agreement_matrix():
    m = rankings(TABLE, BETTER)["agreement"]
    assert m["ins"]["del"] == pytest.approx(1.0)                     # A, B, C in the same order
    assert m["ins"]["ins"] == pytest.approx(1.0)
    # ins ranks 1,2,3,4 vs point 2.5,2.5,4,1 → centred (−1.5,−.5,.5,1.5)·(0,0,1.5,−1.5) / √(5·4.5)
    assert m["ins"]["point"] == pytest.approx((0.5 * 1.5 - 1.5 * 1.5) / (5 * 4.5) ** 0.5)
    assert m["point"]["ins"] == m["ins"]["point"]


def test_bad_direction_is_refused():
    with pytest.raises(ValueError, match="higher"):
        rankings(TABLE, {"ins": "up"})
