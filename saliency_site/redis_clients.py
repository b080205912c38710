"""Redis clients for the site's own quick questions (job notices, worker snapshots)."""
from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def fail_fast(url: str, timeout: float) -> redis.Redis:
    """A client that fails at once when Redis is away, within ``timeout`` seconds otherwise.

    redis-py retries a failed connection three times with backoff by default (4.4 s measured
    against a closed port). These questions are asked on a job's save and a page's request,
    and each has an answer without Redis, so none of them may wait for it.
    """
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 0))
