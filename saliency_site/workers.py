"""Which Celery workers are alive, and what they are doing, as the broker tells it.

``live_workers()`` asks every worker over the broker (Celery's remote control: ``stats`` for
the pool size, ``active`` for the tasks being executed) and keeps the answer in Redis for
``SNAPSHOT_TTL_S`` so that pages polling a run's progress read it without a broadcast each.
A worker that does not answer within the timeout counts as gone.
"""
from __future__ import annotations

import ast
import json
import logging
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings

from . import redis_clients

logger = logging.getLogger(__name__)

SNAPSHOT_KEY = "saliency:live-workers"
SNAPSHOT_TTL_S = 10
INSPECT_TIMEOUT_S = 1.5
#: The shard and job sweeps are sent together: the second takes the first one's answer.
SWEEP_SNAPSHOT_AGE_S = 3.0


@dataclass
class Worker:
    hostname: str
    concurrency: int = 1
    #: (task name, first argument) of every task it is executing now
    tasks: list[tuple[str, object]] = field(default_factory=list)

    def runs(self, task_name: str, argument) -> bool:
        return any(name == task_name and arg == argument for name, arg in self.tasks)


def _first_argument(request: dict):
    args = request.get("args")
    if isinstance(args, str):  # some Celery versions report the repr
        try:
            args = ast.literal_eval(args)
        except (ValueError, SyntaxError):
            return None
    return args[0] if args else None


def _redis() -> redis.Redis:
    return redis_clients.fail_fast(settings.CELERY_BROKER_URL, INSPECT_TIMEOUT_S)


def inspect_workers(timeout: float = INSPECT_TIMEOUT_S) -> dict[str, Worker]:
    """Ask the workers now. Raises when the broker cannot be reached (nothing is known then)."""
    from .celery import app

    with app.connection_for_read(settings.CELERY_BROKER_URL) as connection:
        stats = app.control.inspect(timeout=timeout, connection=connection).stats() or {}
        # The second question waits only for the workers that answered the first.
        active = (app.control.inspect(timeout=timeout, connection=connection, limit=len(stats)).active() or {}
                  if stats else {})
    workers = {}
    for hostname in set(stats) | set(active):
        pool = (stats.get(hostname) or {}).get("pool") or {}
        concurrency = pool.get("max-concurrency") or 1
        tasks = [(t.get("name"), _first_argument(t)) for t in active.get(hostname) or []]
        workers[hostname] = Worker(hostname=hostname, concurrency=int(concurrency), tasks=tasks)
    return workers


def live_workers(*, max_age: float = SNAPSHOT_TTL_S) -> dict[str, Worker] | None:
    """The live workers (hostname -> ``Worker``); ``None`` when the broker is unreachable.

    An answer at most ``max_age`` seconds old is taken from the snapshot (``max_age=0``: ask now).
    """
    try:
        client = _redis()
        stored = client.get(SNAPSHOT_KEY) if max_age > 0 else None
        if stored is not None:
            snapshot = json.loads(stored)
            if time.time() - snapshot["at"] <= max_age:
                return {w["hostname"]: Worker(hostname=w["hostname"], concurrency=w["concurrency"],
                                              tasks=[tuple(t) for t in w["tasks"]])
                        for w in snapshot["workers"]}
        workers = inspect_workers()
        snapshot = {"at": time.time(), "workers": [
            {"hostname": w.hostname, "concurrency": w.concurrency, "tasks": [list(t) for t in w.tasks]}
            for w in workers.values()]}
        client.set(SNAPSHOT_KEY, json.dumps(snapshot), ex=SNAPSHOT_TTL_S)
        return workers
    except Exception as error:  # noqa: BLE001 - broker down or a reply that could not be read
        logger.warning("could not ask the workers: %s", error)
        return None
