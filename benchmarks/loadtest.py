"""A bounded load test of the site on loopback: N users register, upload a photo, predict and explain.

    .venv/bin/python -m benchmarks.loadtest [--users 20] [--duration 60] [--methods gradcam ...]
        [--host http://127.0.0.1:8000] [--with-experiment] [--out benchmarks/results]

Without ``--host`` the whole site is started by its own launcher in a throw-away data folder on a
free port, and stopped with SIGTERM at the end. Each simulated user (locust, used as a library)
registers, takes an API token, uploads a scikit-image sample photo, then loops: create an
explanation set (the prediction), wait for it, queue maps of the top class, follow the jobs until
they finish. The report gives p50/p95 per call kind, job turnaround (submit → the job row says
done/failed, seen by polling), errors, and the queue drain: time from the last submission until
every submitted job had finished.

Importing locust monkey-patches the process with gevent, so nothing the site or the test suite
imports may import this module; the tests run it as a subprocess.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

MAX_SECONDS = 300  # the whole test, users and drain together, never runs longer than this
PHOTOS = ("chelsea", "coffee", "astronaut")
FINISHED = ("done", "failed")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(host: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the site exited with status {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{host}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise RuntimeError(f"{host}/healthz did not answer 200 within {timeout:.0f} s")


@contextlib.contextmanager
def started_site(timeout: float = 240):
    """The whole site (launcher: PostgreSQL, Redis, workers, web) in a fresh data folder; yields its URL."""
    root = Path(__file__).resolve().parent.parent
    data_dir = tempfile.mkdtemp(prefix="saliency-load-")
    port = _free_port()
    env = dict(os.environ, SALIENCY_DATA_DIR=data_dir, PORT=str(port))
    log = open(Path(data_dir) / "site.log", "wb")  # outlives this block: the site writes to it
    process = subprocess.Popen([sys.executable, "-m", "saliency_site.launcher", "serve"], cwd=root, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    host = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(host, timeout, process)
        yield host
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def photo_jpeg(name: str) -> bytes:
    """One of scikit-image's bundled photos as JPEG bytes."""
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class Session:
    """A plain-requests client for set-up outside the load (experiment, drain polling)."""

    def __init__(self, host: str, token: str | None = None):
        import requests

        self.host, self.http = host, requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Token {token}"

    @classmethod
    def new_account(cls, host: str) -> Session:
        session = cls(host)
        username, password = f"load-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
        session.http.post(f"{host}/api/auth/register/", json={"username": username, "password": password},
                          timeout=30).raise_for_status()
        answer = session.http.post(f"{host}/api/auth/token/", json={"login": username, "password": password},
                                   timeout=30)
        answer.raise_for_status()
        session.http.headers["Authorization"] = f"Token {answer.json()['token']}"
        return session

    def get(self, path: str):
        answer = self.http.get(f"{self.host}{path}", timeout=30)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, payload: dict):
        answer = self.http.post(f"{self.host}{path}", json=payload, timeout=60)
        if answer.status_code >= 400:
            raise RuntimeError(f"POST {path} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()


def builtin_model_id(session: Session, key: str = "efficientnet_lite0") -> int:
    models = session.get("/api/models/")
    models = models.get("results", models) if isinstance(models, dict) else models
    for model in models:
        if model.get("builtin_key") == key:
            return model["id"]
    raise RuntimeError(f"the site has no built-in model {key!r}")


def experiment_submit(host: str, images: int = 8) -> tuple[Session, str]:
    """Queue a small evaluation on the bundled localisation set; returns the session and its URL."""
    session = Session.new_account(host)
    body = {"name": "load-test background run", "model": builtin_model_id(session),
            "dataset": {"kind": "sample-localisation", "subset": {"mode": "first", "n": images}},
            "methods": ["gradcam", "baseline_random"], "protocols": ["torchray-pointing-v1", "thesis-v1"]}
    answer = session.post("/api/experiments/", body)
    url = answer.get("url") or f"/api/experiments/{answer['id']}/"
    return session, url


def _user_class(host: str, methods: list[str], ledger: dict):
    from locust import HttpUser, between, task

    class Researcher(HttpUser):
        wait_time = between(0.5, 2.0)

        def on_start(self):
            self.client.base_url = host
            username, password = f"load-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
            self.client.post("/api/auth/register/", json={"username": username, "password": password},
                             name="register")
            token = self.client.post("/api/auth/token/", json={"login": username, "password": password},
                                     name="token").json()["token"]
            self.client.headers["Authorization"] = f"Token {token}"
            ledger["tokens"].append(token)
            models = self.client.get("/api/models/", name="models").json()
            models = models.get("results", models) if isinstance(models, dict) else models
            self.model = next(m["id"] for m in models if m.get("builtin_key") == "efficientnet_lite0")
            photo = PHOTOS[len(ledger["tokens"]) % len(PHOTOS)]
            answer = self.client.post("/api/images/", files={"file": (f"{photo}.jpg", ledger["photos"][photo],
                                                                       "image/jpeg")}, name="upload")
            self.image = answer.json()["id"]

        def _follow(self, job_urls: list[str], kind: str, submitted: float, timeout: float = 120) -> bool:
            ids = ",".join(u.rstrip("/").rsplit("/", 1)[-1] for u in job_urls)
            pending = set(ids.split(","))
            for url in job_urls:
                ledger["jobs"].append((self.client.headers["Authorization"], url, submitted, kind))
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline and not ledger["stopping"]:
                answer = self.client.get(f"/api/jobs/?ids={ids}", name="poll jobs")
                if answer.status_code != 200:
                    return False
                rows = answer.json()
                rows = rows.get("results", rows) if isinstance(rows, dict) else rows
                for row in rows:
                    if str(row["id"]) in pending and row["status"] in FINISHED:
                        pending.discard(str(row["id"]))
                        ledger["turnaround"].setdefault(kind, []).append(time.monotonic() - submitted)
                        ledger["finished"][row["url"]] = time.monotonic()
                        if row["status"] == "failed":
                            ledger["failed_jobs"].append(f"{row.get('method_key') or kind}: {row.get('error')}")
                        elif row.get("seconds") is not None:
                            ledger["runtime"].setdefault(kind, []).append(row["seconds"])
                if pending:
                    time.sleep(0.25)
            return not pending

        @task
        def predict_and_explain(self):
            submitted = time.monotonic()
            ledger["last_submit"] = submitted
            answer = self.client.post("/api/explanation-sets/", json={"model": self.model, "image": self.image},
                                      name="predict")
            if answer.status_code != 202:
                return
            set_url = answer.json()["url"]
            if not self._follow(answer.json()["jobs"], "predict", submitted):
                return
            predictions = self.client.get(set_url, name="explanation set").json().get("predictions") or []
            target = predictions[0]["index"] if predictions else 0
            submitted = time.monotonic()
            ledger["last_submit"] = submitted
            answer = self.client.post(f"{set_url}maps/", name="explain",
                                      json={"target": target, "methods": [{"key": m} for m in methods]})
            if answer.status_code == 202:
                self._follow(answer.json()["jobs"], "explain", submitted)

    return Researcher


def run_load(host: str, users: int = 20, duration: float = 60, methods: list[str] | None = None,
             spawn_rate: float = 5, drain_timeout: float = 120) -> dict:
    """Drive ``users`` researchers against ``host`` for ``duration`` seconds; returns the report."""
    import gevent
    from locust.env import Environment

    methods = methods or ["gradcam"]
    duration = min(duration, MAX_SECONDS - drain_timeout)
    ledger = {"tokens": [], "jobs": [], "turnaround": {}, "runtime": {}, "finished": {}, "failed_jobs": [],
              "last_submit": None, "stopping": False,
              "photos": {name: photo_jpeg(name) for name in PHOTOS}}
    env = Environment(user_classes=[_user_class(host, methods, ledger)], host=host)
    runner = env.create_local_runner()
    started = time.monotonic()
    runner.start(users, spawn_rate=spawn_rate)
    gevent.sleep(duration)
    ledger["stopping"] = True
    runner.stop()
    stopped = time.monotonic()

    # Drain: follow every submitted job not yet seen finished until it is (or the bound runs out).
    import requests

    # A job first seen finished here still counts in the turnaround (at the first poll that saw it).
    outstanding = [job for job in ledger["jobs"] if job[1] not in ledger["finished"]]
    drain_deadline = time.monotonic() + drain_timeout
    while outstanding and time.monotonic() < drain_deadline:
        still = []
        for job in outstanding:
            auth, url, submitted, kind = job
            try:
                row = requests.get(f"{host}{url}", headers={"Authorization": auth}, timeout=30).json()
            except (requests.RequestException, ValueError):
                still.append(job)
                continue
            if row.get("status") in FINISHED:
                ledger["finished"][url] = time.monotonic()
                ledger["turnaround"].setdefault(kind, []).append(time.monotonic() - submitted)
                if row["status"] == "failed":
                    ledger["failed_jobs"].append(f"{row.get('method_key') or kind}: {row.get('error')}")
                elif row.get("seconds") is not None:
                    ledger["runtime"].setdefault(kind, []).append(row["seconds"])
            else:
                still.append(job)
        outstanding = still
        if outstanding:
            time.sleep(0.5)
    last = ledger["last_submit"]
    drain = (max(ledger["finished"].values()) - last) if last and ledger["finished"] and not outstanding else None
    if drain is not None:
        drain = max(0.0, drain)

    calls = {}
    for (name, method), entry in sorted(env.stats.entries.items()):
        calls[name] = {"method": method, "count": entry.num_requests, "failures": entry.num_failures,
                       "p50_ms": entry.get_response_time_percentile(0.5) if entry.num_requests else None,
                       "p95_ms": entry.get_response_time_percentile(0.95) if entry.num_requests else None}
    errors = [{"name": e.name, "method": e.method, "error": str(e.error), "count": e.occurrences}
              for e in env.stats.errors.values()]
    runner.quit()
    turnaround = {kind: {"count": len(v), "p50_s": percentile(v, 50), "p95_s": percentile(v, 95)}
                  for kind, v in sorted(ledger["turnaround"].items())}
    runtime = {kind: {"p50_s": percentile(v, 50), "p95_s": percentile(v, 95)}
               for kind, v in sorted(ledger["runtime"].items())}
    return {"host": host, "users": users, "duration_s": round(stopped - started, 1), "methods": methods,
            "calls": calls, "errors": errors, "failed_jobs": ledger["failed_jobs"][:20],
            "jobs_submitted": len(ledger["jobs"]), "jobs_unfinished": len(outstanding),
            "turnaround": turnaround, "job_runtime": runtime, "queue_drain_s": drain}


def _fmt(value, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def render(report: dict) -> str:
    lines = [(f"## Load test: {report['users']} users, {report['duration_s']} s, methods "
             f"{', '.join(report['methods'])}{', experiment running' if report.get('experiment') else ''}"), "",
             "| call | requests | failures | p50 ms | p95 ms |", "|---|---:|---:|---:|---:|"]
    for name, row in report["calls"].items():
        lines.append(f"| {row['method']} {name} | {row['count']} | {row['failures']} | "
                     f"{_fmt(row['p50_ms'], digits=0)} | {_fmt(row['p95_ms'], digits=0)} |")
    lines += ["", "| job turnaround | jobs | p50 s | p95 s | runtime p50 s |", "|---|---:|---:|---:|---:|"]
    for kind, row in report["turnaround"].items():
        runtime = report["job_runtime"].get(kind, {}).get("p50_s")
        lines.append(f"| {kind} | {row['count']} | {_fmt(row['p50_s'])} | {_fmt(row['p95_s'])} | {_fmt(runtime)} |")
    lines += ["", (f"jobs submitted {report['jobs_submitted']}, unfinished after the drain "
                  f"{report['jobs_unfinished']}, queue drain {_fmt(report['queue_drain_s'], digits=1)} s, "
                  f"request errors {sum(e['count'] for e in report['errors'])}, failed jobs {len(report['failed_jobs'])}")]
    for error in report["errors"][:10]:
        lines.append(f"- {error['method']} {error['name']}: {error['error']} (×{error['count']})")
    for failure in report["failed_jobs"][:10]:
        lines.append(f"- job failed: {failure}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="a site already up (loopback); default: start one in a fresh data folder")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (the drain comes after)")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--methods", nargs="+", default=["gradcam"], help="method keys to explain with")
    parser.add_argument("--with-experiment", action="store_true",
                        help="queue a small evaluation on the bundled localisation set before the users start")
    parser.add_argument("--out", type=Path, help="folder for loadtest-*.json and .md")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of markdown")
    args = parser.parse_args(argv)
    import locust  # noqa: F401  (first: its gevent monkey-patching must precede requests/ssl imports)
    if args.host and not args.host.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("--host must be on loopback (http://127.0.0.1:…)")

    with contextlib.ExitStack() as stack:
        host = args.host.rstrip("/") if args.host else stack.enter_context(started_site())
        experiment = None
        if args.with_experiment:
            session, url = experiment_submit(host)
            experiment = {"url": url}
        report = run_load(host, users=args.users, duration=args.duration, methods=args.methods,
                          spawn_rate=args.spawn_rate, drain_timeout=args.drain_timeout)
        if experiment:
            state = session.get(url)
            experiment["status_at_end"] = state.get("status")
        report["experiment"] = experiment
    report["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    text = render(report)
    print(json.dumps(report, indent=2) if args.json else text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"loadtest-{args.users}u{'-experiment' if experiment else ''}"
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
