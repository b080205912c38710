"""``./run``'s launcher brings the whole site up on embedded servers and SIGTERM takes all of it down."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from saliency_site.launcher import free_port

BASE_DIR = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the launcher exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise AssertionError("the site did not become healthy")


def processes_of(launcher: subprocess.Popen, data_dir: Path) -> list[psutil.Process]:
    """The launcher's descendants plus the PostgreSQL server (pg_ctl daemonises it)."""
    tree = psutil.Process(launcher.pid).children(recursive=True)
    postmaster = (data_dir / "postgres" / "postmaster.pid").read_text().split()[0]
    return tree + [psutil.Process(int(postmaster))]


def start(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "SALIENCY_TEST_DATABASE")}
    env.update(SALIENCY_DATA_DIR=str(data_dir), PORT=str(port), WEB_CONCURRENCY="1")
    log = open(data_dir.parent / "launcher.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "saliency_site.launcher", "serve"], cwd=BASE_DIR, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(launcher: subprocess.Popen, processes: list[psutil.Process]) -> None:
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=90) == 0
    gone, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"


def manage(data_dir: Path, *args: str) -> str:
    services = json.loads((data_dir / "run" / "services.json").read_text())
    env = {**os.environ, "SALIENCY_DATA_DIR": str(data_dir), "DATABASE_URL": services["database_url"],
           "CELERY_BROKER_URL": services["broker_url"]}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True,
                          capture_output=True, text=True).stdout


def test_site_starts_stops_cleanly_and_keeps_its_data(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()

    launcher = start(data_dir, port)
    try:
        health = wait_healthy(port, launcher)
        assert health["status"] == "ok"
        assert health["database"]["engine"] == "postgresql" and health["workers"]["count"] == 1
        # gunicorn serves the collected static files too (WhiteNoise).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=10) as response:
            assert response.status == 200 and b"body" in response.read()
        manage(data_dir, "shell", "-c",
               "from django.contrib.auth.models import User; User.objects.create_user('kept', password='x')")
        processes = processes_of(launcher, data_dir)
        assert {p.name() for p in processes} >= {"redis-server", "postgres"}
    except BaseException:
        launcher.kill()
        raise
    stop(launcher, processes)
    assert not (data_dir / "run" / "services.json").exists()

    # A second start reuses the data folder: the row written before is still there.
    launcher = start(data_dir, port)
    try:
        assert wait_healthy(port, launcher)["status"] == "ok"
        count = manage(data_dir, "shell", "-c",
                       "from django.contrib.auth.models import User; print(User.objects.filter(username='kept').count())")
        assert count.strip().splitlines()[-1] == "1"
        processes = processes_of(launcher, data_dir)
    except BaseException:
        launcher.kill()
        raise
    stop(launcher, processes)
