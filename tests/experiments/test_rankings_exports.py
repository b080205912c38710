"""Rankings in the exports, on a hand-made table of three methods × three columns of two protocols.

By hand: pointing "all" ranks A 1, B 2, C 3; insertion (higher better) and deletion (lower
better) rank B 1, A 2, C 3. Mean ranks: B 4/3, A 5/3 (spread √(2/9) ≈ 0.4714 both), C 3
(spread 0). Spearman: pointing vs insertion (and vs deletion): d = (−1, 1, 0), ρ = 1 − 6·2/(3·8)
= 0.5; insertion vs deletion: 1.
"""
from __future__ import annotations

import csv
import io
import math

import pytest

from experiments.models import Experiment
from experiments.services.aggregation import _rankings

pytestmark = pytest.mark.django_db


def _block(name, columns, values):
    rows = [{"slot": i, "method": m.lower(), "label": m, "enhance": False, "baseline": False, "n": 10, "failed": 0,
             "values": dict(zip([c["key"] for c in columns], v)), "extras": {}} for i, (m, v) in enumerate(values.items())]
    best = {c["key"]: (max if c["better"] == "higher" else min)(r["values"][c["key"]] for r in rows) for c in columns}
    return {"name": name, "metric": "x", "description": "", "params": {}, "columns": columns, "rows": rows,
            "best": best, "plots": []}


@pytest.fixture()
def hand_made_run(alice, lite0):
    blocks = [
        _block("pointing", [{"key": "all", "label": "Pointing (all)", "better": "higher"}],
               {"A": (90.0,), "B": (80.0,), "C": (70.0,)}),
        _block("causal", [{"key": "insertion", "label": "Insertion AUC", "better": "higher"},
                          {"key": "deletion", "label": "Deletion AUC", "better": "lower"}],
               {"A": (50.0, 20.0), "B": (60.0, 10.0), "C": (40.0, 30.0)}),
    ]
    results = {"protocols": blocks, "rankings": _rankings(blocks)}
    return Experiment.objects.create(owner=alice, name="hand-made", model=lite0, status=Experiment.Status.DONE,
                                     num_images=10, units_total=30, results=results,
                                     methods=[{"slot": i, "key": m.lower(), "label": m, "enhance": False, "params": {},
                                               "enhance_params": {}, "baseline": False} for i, m in enumerate("ABC")])


def test_the_aggregate_names_metrics_by_protocol_and_column(hand_made_run):
    r = hand_made_run.results["rankings"]
    assert r["metrics"] == ["pointing:all", "causal:insertion", "causal:deletion"]
    assert [row["method"] for row in r["aggregate"]] == ["B", "A", "C"]


def test_csv_table_carries_each_rank(alice_api, hand_made_run):
    rows = list(csv.DictReader(io.StringIO(alice_api.get(f"/api/experiments/{hand_made_run.pk}/export/csv/").content.decode())))
    rank = {(r["protocol"], r["metric"], r["method"]): float(r["rank"]) for r in rows}
    assert rank[("pointing", "all", "A")] == 1 and rank[("pointing", "all", "C")] == 3
    assert rank[("causal", "insertion", "B")] == 1 and rank[("causal", "deletion", "B")] == 1
    assert rank[("causal", "deletion", "A")] == 2


def test_rankings_csv_has_mean_rank_spread_and_agreement(alice_api, hand_made_run):
    response = alice_api.get(f"/api/experiments/{hand_made_run.pk}/export/rankings/")
    assert response.status_code == 200 and "rankings.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    aggregate = {r["method"]: r for r in rows if r["kind"] == "aggregate"}
    assert float(aggregate["B"]["value"]) == pytest.approx(4 / 3)
    assert float(aggregate["A"]["value"]) == pytest.approx(5 / 3)
    assert float(aggregate["A"]["spread"]) == pytest.approx(math.sqrt(2 / 9))
    assert float(aggregate["C"]["value"]) == 3 and float(aggregate["C"]["spread"]) == 0
    rho = {(r["metric"], r["other_metric"]): float(r["value"]) for r in rows if r["kind"] == "agreement"}
    assert rho[("pointing:all", "causal:insertion")] == pytest.approx(0.5)
    assert rho[("causal:deletion", "pointing:all")] == pytest.approx(0.5)
    assert rho[("causal:insertion", "causal:deletion")] == pytest.approx(1.0)
    assert len([r for r in rows if r["kind"] == "rank"]) == 9


def test_text_backup_and_json_carry_the_rankings(alice_api, hand_made_run):
    text = alice_api.get(f"/api/experiments/{hand_made_run.pk}/export/txt/").content.decode()
    assert "Rankings across metrics" in text and "pointing:all" in text
    line_b = next(line for line in text.splitlines() if line.strip().startswith("B ") and "±" in line)
    assert "1.33 ± 0.47" in line_b
    assert "0.50" in text.split("Agreement between metrics")[1]
    dump = alice_api.get(f"/api/experiments/{hand_made_run.pk}/export/json/").json()
    assert dump["results"]["rankings"]["ranks"]["causal:deletion"] == {"B": 1, "A": 2, "C": 3}
