"""Fixtures shared by the whole suite: a real Celery worker and a real browser.

Run through ``./run test``, which starts embedded PostgreSQL and Redis and passes their
addresses in ``DATABASE_URL`` / ``CELERY_BROKER_URL``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support import make_user

BASE_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _database_url(settings_dict: dict) -> str:
    """A URL for the database Django is using now (the test database inside a test run)."""
    host = settings_dict.get("HOST") or settings_dict.get("OPTIONS", {}).get("host", "")
    port = settings_dict.get("PORT") or ""
    user = settings_dict.get("USER") or ""
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{quote(user)}:{quote(password)}@" if password else f"{quote(user)}@"
    if host.startswith("/"):
        return f"postgres://{auth}/{settings_dict['NAME']}?host={host}"
    return f"postgres://{auth}{host}{':' + str(port) if port else ''}/{settings_dict['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` subprocess consuming the test broker's queues.

    ``beat=True`` embeds Celery beat (``-B``), so the periodic sweeps run, every
    ``SALIENCY_SWEEP_SECONDS`` (2 s here); ``env`` adds environment variables.
    """

    QUEUES = "interactive,batch,default"

    def __init__(self, database_url: str, name: str = "testworker", queues: str | None = None,
                 beat: bool = False, env: dict | None = None):
        self.database_url = database_url
        self.name = name
        self.queues = queues or self.QUEUES
        self.beat = beat
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.log_path = BASE_DIR / "data" / "test" / f"{name}.log"

    @property
    def hostname(self) -> str:
        import socket

        return f"{self.name}@{socket.gethostname()}"

    def start(self, timeout: float = 90) -> "WorkerProcess":
        from saliency_site.celery import app

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # One torch thread, as in this process (one_torch_thread): the results of a worker and of
        # a reference computed here then agree to float32 rounding.
        env = {**os.environ, "DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1",
               "SALIENCY_SWEEP_SECONDS": "2", "OMP_NUM_THREADS": "1", **self.env}
        argv = [sys.executable, "-m", "celery", "-A", "saliency_site", "worker", "--queues", self.queues,
                "--concurrency", "1", "--hostname", f"{self.name}@%h", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle"]
        if self.beat:
            argv += ["-B", "--schedule", str(self.log_path.with_suffix(".beat"))]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited with {self.process.returncode}; see {self.log_path}")
            try:
                replies = app.control.ping(timeout=0.5) or []
            except Exception:  # noqa: BLE001 - a broker restarted meanwhile (stale pooled connection): ask again
                replies = []
            if any(self.name in next(iter(reply)) for reply in replies):
                return self
        raise RuntimeError(f"the Celery worker did not answer within {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """Kill the worker and its pool children at once (a crash, not a shutdown)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def worker_database_url(django_db_setup, django_db_blocker) -> str:
    from django.db import connection

    return _database_url(connection.settings_dict)


@pytest.fixture(scope="session")
def celery_worker(worker_database_url):
    """A real Celery worker for the session. Tests that use it must commit their rows
    (``transactional_db`` or ``live_server``), since the worker reads them over its own connection."""
    from saliency_site.celery import app

    app.control.purge()
    worker = WorkerProcess(worker_database_url).start()
    yield worker
    worker.stop()


@pytest.fixture()
def worker_factory(worker_database_url):
    """Start (and finally stop) extra named workers, e.g. to kill one mid-run and start another."""
    started: list[WorkerProcess] = []

    def start(name: str, **options) -> WorkerProcess:
        worker = WorkerProcess(worker_database_url, name=name, **options)
        started.append(worker)  # before it answers: one that never does is stopped too
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: browser tests must run in CI")
        pytest.skip("chromium is not installed (apt install chromium): browser test skipped")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django's live server must
    # still be allowed to touch the database from the test.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    # A page may end with a routed request in flight (a held jobs request): drop it quietly.
    page.unroute_all(behavior="ignoreErrors")
    context.close()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared two-core machine, with a worker and PostgreSQL beside the
    tests, thread synchronisation costs more than it saves (measured 4-6x slower with two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def builtin_models(db):
    from explain.services import builtin_models_sync

    return {row.builtin_key: row for row in builtin_models_sync()}


@pytest.fixture()
def lite0(builtin_models):
    row = builtin_models["efficientnet_lite0"]
    assert row.weights_present, "efficientnet_lite0's packaged weights should be installed"
    return row


@pytest.fixture()
def alice(db):
    return make_user("alice")


@pytest.fixture()
def bob(db):
    return make_user("bob")


def _api_client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture()
def alice_api(alice):
    return _api_client(alice)


@pytest.fixture()
def bob_api(bob):
    return _api_client(bob)
