"""The load test command, run briefly against the live test server with a real worker.

It runs in a subprocess: importing locust monkey-patches the process with gevent, which must not
happen inside the test process (pytest-django's database handling, the other tests' threads).
Only the report's shape and the success of the calls are checked; its timings are measurements.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_two_users_register_upload_predict_and_explain_without_errors(live_server, celery_worker, lite0, tmp_path):
    answer = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadtest", "--host", live_server.url, "--users", "2", "--spawn-rate", "2",
         "--duration", "15", "--drain-timeout", "90", "--json", "--out", str(tmp_path)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert answer.returncode == 0, answer.stderr[-3000:]
    report = json.loads((tmp_path / "loadtest-2u.json").read_text())
    assert (tmp_path / "loadtest-2u.md").read_text().startswith("## Load test: 2 users")
    assert report["users"] == 2 and report["methods"] == ["gradcam"]
    for name in ("register", "token", "upload", "predict", "poll jobs"):
        assert report["calls"][name]["count"] >= 1, name
    assert all(row["failures"] == 0 for row in report["calls"].values()), report["calls"]
    assert report["errors"] == [] and report["failed_jobs"] == []
    assert report["turnaround"]["predict"]["count"] >= 1
    assert report["turnaround"]["predict"]["p50_s"] <= report["turnaround"]["predict"]["p95_s"]
    assert report["jobs_submitted"] >= 2 and report["jobs_unfinished"] == 0
    assert report["queue_drain_s"] is not None and report["queue_drain_s"] >= 0
