"""``./run``'s launcher brings the whole site up on embedded servers, restarts the children that
die, and SIGTERM takes all of it down."""
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


def health(port: int) -> tuple[int, dict]:
    """(status code, body) of /healthz; raises when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the launcher exited with {process.returncode}"
        try:
            code, body = health(port)
            if code == 200:
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise AssertionError("the site did not become healthy")


def children(data_dir: Path) -> dict:
    return json.loads((data_dir / "run" / "supervisor.json").read_text())["children"]


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
        body = wait_healthy(port, launcher)
        assert body["status"] == "ok" and body["supervisor"]["state"] == "ok"
        assert {name for name, child in children(data_dir).items() if child["state"] == "running"} == \
            {"redis", "interactive", "worker", "beat", "web"}
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


def test_dead_worker_and_redis_are_restarted_while_the_web_stays_up(tmp_path):
    """SIGKILL the worker (with its pool) and redis-server: the launcher starts them again, the
    web server keeps answering (503 while degraded, then 200), and SIGTERM still stops all."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    launcher = start(data_dir, port)
    try:
        wait_healthy(port, launcher)
        before = children(data_dir)
        for name in ("worker", "redis"):
            os.killpg(before[name]["pid"], signal.SIGKILL)
        codes = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert launcher.poll() is None, "the launcher exited when its children died"
            code, body = health(port)  # the web server answers throughout
            codes.append(code)
            now = children(data_dir)
            restarted = all(now[n]["pid"] != before[n]["pid"] and now[n]["state"] == "running"
                            for n in ("worker", "redis"))
            if code == 200 and restarted:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not restarted: {children(data_dir)}; health codes {codes}")
        assert 503 in codes, codes
        assert codes[-1] == 200
        after = children(data_dir)
        assert after["web"]["pid"] == before["web"]["pid"] and after["web"]["restarts"] == 0
        assert after["worker"]["restarts"] == 1 and after["redis"]["restarts"] == 1
        log = (data_dir.parent / "launcher.log").read_text()
        assert "worker (pid %d) exited with code -9" % before["worker"]["pid"] in log
        assert "redis restarted" in log and "worker restarted" in log
        processes = processes_of(launcher, data_dir)
        assert {p.name() for p in processes} >= {"redis-server", "postgres"}
    except BaseException:
        launcher.kill()
        raise
    stop(launcher, processes)
    assert not (data_dir / "run" / "supervisor.json").exists()
