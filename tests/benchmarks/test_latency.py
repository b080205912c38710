"""The latency benchmark, one round against the live test server with a real worker and Chromium.

Its timings are measurements, not asserted; what is checked is that it runs, that every map it
waited for was drawn, and that the parts of the timeline (request, queue, worker, method, page)
add up to the time from the click to the visible map, so the breakdown can be trusted.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_one_round_reports_each_map_and_where_its_time_went(live_server, celery_worker, lite0, tmp_path):
    if not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        pytest.skip("chromium is not installed (apt install chromium): browser benchmark skipped")
    answer = subprocess.run(
        [sys.executable, "-m", "benchmarks.latency", "--host", live_server.url, "--methods", "gradcam", "layercam",
         "--rounds", "1", "--conditions", "idle", "--out", str(tmp_path)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert answer.returncode == 0, answer.stderr[-3000:]
    report = json.loads((tmp_path / "latency.json").read_text())
    assert (tmp_path / "latency.md").read_text().startswith("## Generate → map visible")
    rows = report["rows"]["idle"]
    assert sorted(r["method"] for r in rows) == ["gradcam", "layercam"]
    for row in rows:
        assert row["status"] == "done" and row["runtime_s"] > 0
        parts = sum(row[k] for k in ("request_s", "queue_s", "worker_overhead_s", "method_s", "page_s"))
        assert parts == pytest.approx(row["visible_after_s"], abs=0.1), row
        assert row["queue_s"] >= 0 and row["worker_overhead_s"] >= 0 and row["page_s"] >= 0, row
    assert set(report["conditions"]["idle"]) == {"gradcam", "layercam"}
