"""``GET /healthz``: is the site able to do its work right now?

200 when the database and the broker answer, Celery workers serve every queue of
``settings.WORK_QUEUES``, and (under ``./run``)
every process the launcher supervises is up; 503 otherwise, e.g. while a crashed worker or
Redis is being restarted. Everyone sees each piece's state (``ok`` / ``unavailable``); staff
also see the details an operator needs (broker address, database version, worker names and
queues, errors), which are nobody else's business.
"""
from __future__ import annotations

import json
import os

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
    except Exception as error:  # noqa: BLE001 - any driver error means "down"; report it
        status["error"] = str(error).splitlines()[0]
    return status


def broker_status() -> dict:
    status = {"url": _redact(settings.CELERY_BROKER_URL), "reachable": False}
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=PING_TIMEOUT_S,
                                      socket_connect_timeout=PING_TIMEOUT_S)
        status["reachable"] = bool(client.ping())
        client.close()
    except Exception as error:  # noqa: BLE001 - any failure means the piece is down; report it
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
        served = {queue for names in status["workers"].values() for queue in names}
        missing = [queue for queue in settings.WORK_QUEUES if queue not in served]
        if missing and status["count"]:
            status["error"] = f"no worker serves the queue(s): {', '.join(missing)}"
    except Exception as error:  # noqa: BLE001 - any failure means the piece is down; report it
        status["error"] = str(error).splitlines()[0]
    return status


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def supervisor_status() -> dict | None:
    """The launcher's children (``data/run/supervisor.json``), or ``None`` when no launcher
    supervises this site (compose, or a launcher that is gone)."""
    path = settings.DATA_DIR / "run" / "supervisor.json"
    try:
        known = json.loads(path.read_text())
        os.kill(int(known["pid"]), 0)  # a file left by a killed launcher says nothing
    except (OSError, ValueError, KeyError, TypeError):
        return None
    children = known.get("children") or {}
    down = sorted(name for name, child in children.items() if child.get("state") != "running")
    status = {"reachable": not down, "children": children}
    if down:
        status["error"] = f"restarting: {', '.join(down)}"
    return status


def _is_staff(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return bool(user.is_staff)
    if "HTTP_AUTHORIZATION" in request.META:  # an API token, as the API takes it
        from rest_framework.authentication import TokenAuthentication
        from rest_framework.exceptions import AuthenticationFailed

        try:
            found = TokenAuthentication().authenticate(request)
        except AuthenticationFailed:
            return False
        return bool(found and found[0].is_staff)
    return False


def _state(ok: bool) -> str:
    return "ok" if ok else "unavailable"


@require_GET
def healthz(request):
    database = database_status()
    broker = broker_status()
    workers = workers_status() if broker["reachable"] else {"count": 0, "workers": {}, "error": "broker down"}
    supervisor = supervisor_status()
    workers["reachable"] = workers["count"] >= 1 and "error" not in workers
    pieces = {"database": database, "broker": broker, "workers": workers}
    if supervisor is not None:
        pieces["supervisor"] = supervisor
    healthy = all(piece["reachable"] for piece in pieces.values())
    if _is_staff(request):
        body = {name: {"state": _state(piece.pop("reachable")), **piece} for name, piece in pieces.items()}
        body["models"] = zoo.weights_status()
    else:
        body = {name: {"state": _state(piece["reachable"])} for name, piece in pieces.items()}
    body = {"status": _state(healthy), **body}
    return JsonResponse(body, status=200 if healthy else 503)
