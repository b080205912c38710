"""The protocol throughput benchmark, run briefly on the real EfficientNet-Lite0: its report's
shape and arithmetic are checked (the floor is the family's declared passes times the forward
pass measured beside the row, plus the other work a family must do, timed alone: ROAD's sparse
solves and infidelity's draws), not its timings, which are measurements."""
import json

import pytest

from benchmarks import protocols
from experiments.core.metrics import get_family
from experiments.core.protocols import get_protocol


def test_default_protocols_leave_out_the_families_the_photos_cannot_run():
    names = protocols.default_protocols()
    assert "thesis-v1" in names and "complexity-v1" in names
    assert not {get_protocol(n).metric for n in names} & protocols.SKIPPED_FAMILIES


def test_a_short_run_reports_every_method_plain_and_enhanced_against_its_floor(tmp_path, monkeypatch):
    monkeypatch.delenv("SALIENCY_EVAL_BATCH", raising=False)
    names = ("bhatt-faithfulness-v1", "yeh-infidelity-v1", "complexity-v1")
    assert protocols.main(["--protocols", *names, "--methods", "gradcam",
                           "--images", "2", "--repeats", "1", "--runs", "2", "--batch-sizes", "1", "8",
                           "--out", str(tmp_path), "--name", "short"]) == 0
    result = json.loads((tmp_path / "short.json").read_text())
    forward = result["forward_floor"]["224"]["seconds_per_image"]
    assert forward > 0 and result["forward_floor"]["224"]["batch_size"] in (1, 8)
    rows = {(r["protocol"], r["enhanced"]): r for r in result["rows"]}
    assert set(rows) == {(p, e) for p in names for e in (False, True)}
    for (name, _), row in rows.items():
        passes = get_family(get_protocol(name).metric).cost(get_protocol(name)).model_passes
        assert row["model_passes"] == passes
        # Infidelity's 11 passes: two photos share a CPU batch of 16, as a worker's shard runs them.
        assert row["image_group"] == (2 if name == "yeh-infidelity-v1" else 1)
        assert row["seconds_per_image"] == pytest.approx(row["explain_seconds"] + row["evaluation_seconds"], rel=1e-6)
        assert len(row["evaluation_runs"]) == 2 and row["evaluation_seconds"] == min(row["evaluation_runs"])
        assert row["images_per_minute"] == pytest.approx(60 / row["seconds_per_image"])
        assert row["forward_seconds"] > 0
        if name == "yeh-infidelity-v1":
            # 10 × 3×224×224 float64 normals: well beyond a millisecond
            assert row["other_work_seconds"] > 1e-3
        else:
            assert row["other_work_seconds"] == 0
        if passes:
            assert row["floor_seconds"] == pytest.approx(passes * row["forward_seconds"] + row["other_work_seconds"])
            assert row["passes_only_ratio"] == pytest.approx(passes * row["forward_seconds"] / row["evaluation_seconds"])
            assert row["ratio"] == pytest.approx(row["floor_seconds"] / row["evaluation_seconds"])
        else:
            assert row["floor_seconds"] is None and row["ratio"] is None
    # The enhancement costs explainer time, not evaluation passes.
    assert rows[("complexity-v1", True)]["explain_seconds"] > rows[("complexity-v1", False)]["explain_seconds"]
    assert (tmp_path / "short.md").read_text().startswith("# Protocol throughput: efficientnet_lite0")


def test_the_road_floor_adds_its_sparse_solves_to_its_passes(tmp_path, monkeypatch):
    monkeypatch.delenv("SALIENCY_EVAL_BATCH", raising=False)
    assert protocols.main(["--protocols", "road-v1", "--methods", "gradcam", "--images", "1", "--repeats", "1",
                           "--runs", "1", "--batch-sizes", "8", "--out", str(tmp_path), "--name", "road"]) == 0
    result = json.loads((tmp_path / "road.json").read_text())
    assert len(result["rows"]) == 2
    for row in result["rows"]:
        passes_floor = row["model_passes"] * row["forward_seconds"]
        # 14 solves of 5 000–45 000 unknowns take well beyond a millisecond. They are timed apart from the
        # evaluation, so on a shared machine either can come out longer: no bound between the two.
        assert row["other_work_seconds"] > 1e-3
        assert row["floor_seconds"] == pytest.approx(passes_floor + row["other_work_seconds"])
        assert row["ratio"] == pytest.approx(row["floor_seconds"] / row["evaluation_seconds"])
        assert row["passes_only_ratio"] == pytest.approx(passes_floor / row["evaluation_seconds"])
    assert "| other work s/img |" in (tmp_path / "road.md").read_text()
