"""``GET /healthz``: is the site able to do its work right now?

200 when the database, the broker and at least one Celery worker answer; 503 otherwise.
The body says which piece is down, so an operator knows where to look.
"""
from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from explain.core import zoo

from .celery import app as celery_app

PING_TIMEOUT_S = 1.5


def database_status() -> dict:
    status = {"engine": connection.vendor, "reachable": False}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            status["version"] = cursor.fetchone()[0].split(" on ")[0]
        status["reachable"] = True
    except Exception as error:  # any driver error means "down"; report it
        status["error"] = str(error).splitlines()[0]
    return status


def broker_status() -> dict:
    status = {"url": _redact(settings.CELERY_BROKER_URL), "reachable": False}
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=PING_TIMEOUT_S,
                                      socket_connect_timeout=PING_TIMEOUT_S)
        status["reachable"] = bool(client.ping())
        client.close()
    except Exception as error:
        status["error"] = str(error).splitlines()[0]
    return status


def workers_status() -> dict:
    status = {"count": 0, "workers": {}}
    try:
        # Ask over the broker the settings name now (not the one Celery cached at import).
        with celery_app.connection_for_read(settings.CELERY_BROKER_URL) as connection:
            inspector = celery_app.control.inspect(timeout=PING_TIMEOUT_S, connection=connection)
            queues = inspector.active_queues() or {}
        status["workers"] = {name: sorted(q["name"] for q in qs) for name, qs in queues.items()}
        status["count"] = len(status["workers"])
    except Exception as error:
        status["error"] = str(error).splitlines()[0]
    return status


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@require_GET
def healthz(request):
    database = database_status()
    broker = broker_status()
    workers = workers_status() if broker["reachable"] else {"count": 0, "workers": {}, "error": "broker down"}
    healthy = database["reachable"] and broker["reachable"] and workers["count"] >= 1
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": database,
        "broker": broker,
        "workers": workers,
        "models": zoo.weights_status(),
    }
    return JsonResponse(body, status=200 if healthy else 503)
