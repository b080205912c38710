"""Job changes pushed to the pages that follow them: a long poll on the jobs list, woken by Redis.

A page following its jobs asks ``GET /api/jobs/?ids=…&wait=5&seen=<version>``. While nothing it
shows has changed (the ``version`` of the list it holds, :func:`version_of`), the request is held
until one of its jobs is saved or ``wait`` seconds pass, so a finished map is seen within a few
milliseconds instead of at the next poll (a poll every 150–600 ms cost a map a quarter second).

- The row stays the truth. A message on a job's channel only says "read it again", so a lost
  message costs at most one ``wait``, and a page that reads the rows gets what it would have.
- Every save of a :class:`~explain.models.Job` (the worker's running, progress, done and failed,
  and the sweeps' requeues) announces the job once the transaction commits; a job that starts
  also announces :data:`QUEUE_CHANNEL`, since every queued job behind it moved up a place.
- A held request holds a web thread, so each web process holds at most ``JOB_WAIT_SLOTS`` at
  once; beyond that, and when Redis cannot be reached, the list is answered at once
  (``waited: false``) and the page polls at its own pace, as it did before.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence

import redis
from django.conf import settings
from django.db import transaction

from saliency_site import redis_clients

logger = logging.getLogger(__name__)

#: Any job started: the queue positions of the jobs behind it changed.
QUEUE_CHANNEL = "saliency:jobs:queue"
#: The longest a request is held (seconds), whatever it asks for.
MAX_WAIT_S = 10.0
#: How long a publish or subscribe may take before the change is left to the next poll.
REDIS_TIMEOUT_S = 0.5

_client: redis.Redis | None = None
_client_lock = threading.Lock()
_slots = threading.BoundedSemaphore(max(1, settings.JOB_WAIT_SLOTS))


def channel_of(pk: int) -> str:
    return f"saliency:job:{int(pk)}"


def connect(url: str) -> redis.Redis:
    """The client the notices go through: it fails at once when Redis is away, since every save
    of a job publishes and a page has its answer without Redis."""
    return redis_clients.fail_fast(url, REDIS_TIMEOUT_S)


def _redis() -> redis.Redis:
    global _client
    with _client_lock:
        if _client is None:
            _client = connect(settings.REDIS_URL)
        return _client


def _publish(channels: Sequence[str]) -> None:
    try:
        with _redis().pipeline(transaction=False) as pipe:
            for name in channels:
                pipe.publish(name, b"")
            pipe.execute()
    except redis.RedisError as error:  # the pages then see the change at their next poll
        logger.debug("could not announce %s: %s", channels, error)


def announce(pks: Iterable[int], *, started: bool = False) -> None:
    """Tell the requests waiting on jobs ``pks`` to read them again, once the current
    transaction commits (at once outside one); ``started``: the queue moved too."""
    channels = [channel_of(pk) for pk in pks] + ([QUEUE_CHANNEL] if started else [])
    if channels:
        transaction.on_commit(lambda: _publish(channels))


def version_of(jobs: Iterable[Mapping]) -> str:
    """A short digest of what a page shows of ``jobs`` (serialized rows): equal versions, nothing to redraw.
    The estimate is left out: it changes with the clock, not with the jobs."""
    shown = sorted((job["id"], job["status"], round(float(job["progress"]), 3), job.get("queue_position"))
                   for job in jobs)
    return hashlib.blake2b(repr(shown).encode(), digest_size=8).hexdigest()


class Listener:
    """Subscribed to some jobs' channels (:func:`listening`); :meth:`wait` blocks until a message or the timeout."""

    def __init__(self, pubsub: redis.client.PubSub, *, heard: bool = False):
        self._pubsub = pubsub
        self._heard = heard    # a change already arrived while subscribing

    def wait(self, seconds: float) -> bool:
        """Whether one of the jobs changed within ``seconds`` (``False``: the time ran out, or Redis went away)."""
        if self._heard:
            return True
        deadline = time.monotonic() + min(seconds, MAX_WAIT_S)
        try:
            while (left := deadline - time.monotonic()) > 0:
                if self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left) is not None:
                    return True
        except redis.RedisError as error:
            logger.debug("stopped waiting on jobs: %s", error)
        return False


@contextmanager
def listening(pks: Sequence[int], *, queue: bool = False) -> Iterator[Listener | None]:
    """Subscribe to the channels of jobs ``pks`` (and to :data:`QUEUE_CHANNEL` with ``queue``).
    Yields ``None`` when this process holds ``JOB_WAIT_SLOTS`` waits already or Redis cannot be
    reached: the caller answers at once. Subscribe first, then read the rows: a change between
    the two is then heard, not missed."""
    if not pks or not _slots.acquire(blocking=False):
        yield None
        return
    pubsub, heard = None, False
    try:
        try:
            pubsub = _redis().pubsub()
            channels = [channel_of(pk) for pk in pks] + ([QUEUE_CHANNEL] if queue else [])
            pubsub.subscribe(*channels)
            # Until Redis confirms every subscription, a publish could still pass us by.
            confirmed, deadline = 0, time.monotonic() + REDIS_TIMEOUT_S
            while confirmed < len(channels) and time.monotonic() < deadline:
                message = pubsub.get_message(timeout=REDIS_TIMEOUT_S)
                if message is not None:
                    confirmed += message["type"] == "subscribe"
                    heard = heard or message["type"] == "message"
            if confirmed < len(channels):
                raise redis.TimeoutError("the subscriptions were not confirmed in time")
        except redis.RedisError as error:
            logger.debug("cannot wait on jobs %s: %s", list(pks), error)
            pubsub = None
        yield Listener(pubsub, heard=heard) if pubsub is not None else None
    finally:
        if pubsub is not None:
            try:
                pubsub.close()
            except redis.RedisError:
                pass  # the connection is dropped either way
        _slots.release()
