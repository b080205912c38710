"""Request bodies a shared server must not wait for: too large, or too slow.

A client that claims a huge body (``Content-Length: 2147483648``) and then sends almost nothing
would hold a web worker for as long as the body takes to arrive. :class:`RequestBodyLimits`
answers such a claim with 413 before anything reads the body, with a limit per kind of route
(``settings.REQUEST_BODY_LIMITS``), and bounds how long each read of the body may wait
(``settings.REQUEST_BODY_READ_TIMEOUT``), so a client that stalls mid-body is cut off instead of
holding its thread. It is first in ``MIDDLEWARE`` so nothing before it touches the body.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse, UnreadablePostError

logger = logging.getLogger(__name__)


def body_limit(request: HttpRequest) -> int:
    """The largest body (bytes) this route accepts: the first matching prefix of the method and
    path in ``REQUEST_BODY_LIMITS``, else the default for forms and JSON."""
    for method, prefix, limit in settings.REQUEST_BODY_LIMITS:
        if request.method == method and request.path.startswith(prefix):
            return limit
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size // 1024} kB"


class RequestBodyLimits:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        try:
            claimed = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "the Content-Length header is not a number"}, status=400)
        limit = body_limit(request)
        if claimed > limit:
            logger.info("refused a %d-byte body for %s %s (limit %d)", claimed, request.method, request.path, limit)
            response = JsonResponse(
                {"detail": f"the request body is {_megabytes(claimed)}; at most {_megabytes(limit)} are accepted here"},
                status=413)
            response["Connection"] = "close"   # do not read the rest of what was claimed
            return response
        # gunicorn hands the client's socket over: a read that waits longer than this fails.
        sock = request.META.get("gunicorn.socket")
        if claimed and sock is not None:
            sock.settimeout(settings.REQUEST_BODY_READ_TIMEOUT)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if isinstance(exception, UnreadablePostError):
            logger.info("%s %s: the body did not arrive (%s)", request.method, request.path, exception)
            return JsonResponse({"detail": "the request body did not arrive in time; send it again"}, status=400)
        return None
