"""The project's one error vocabulary, and the one place that turns it into HTTP answers.

Services raise :class:`AppError` subclasses whose message says what to do; the numerical
cores (``explain.core``, ``experiments.core``) stay free of Django and raise ``ValueError``
subclasses of their own. :func:`api_exception_handler` (``REST_FRAMEWORK["EXCEPTION_HANDLER"]``)
maps both to clear 4xx answers, so no view catches domain errors itself:

============================  ======  ==============================================
error                          status  meaning
============================  ======  ==============================================
``InputError``, ``ValueError``  400     the request got something wrong; it can be fixed
``Forbidden``, ``PathNotAllowed`` 403   the request names something the user may not use
``NotFound``                    404     no such object for this user (ids of others' objects leak nothing)
``NotAvailable``, ``WeightsMissing`` 409  the server lacks something the work needs
``StateError``                  409     the action does not fit the object's state
============================  ======  ==============================================
"""
from __future__ import annotations

import logging

from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class AppError(ValueError):
    """An error the user can act on; the message says what to do. A ``ValueError`` so the
    numerical cores' own ``ValueError`` subclasses and these read alike to callers."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        #: The request field the error is about; the answer is keyed by it (else by "detail").
        self.field = field


class InputError(AppError):
    """A request the user can fix (unknown method, class out of range, name taken, …)."""


class Forbidden(AppError):
    """The request names something this user may not use (a path outside the data roots, …)."""

    status_code = status.HTTP_403_FORBIDDEN


class NotFound(AppError):
    """No such object for this user; answered the same as a missing one."""

    status_code = status.HTTP_404_NOT_FOUND


class NotAvailable(AppError):
    """The work cannot run here (e.g. a model's weights are not installed)."""

    status_code = status.HTTP_409_CONFLICT


class StateError(AppError):
    """The action does not fit the object's state (cancelling a finished run, …)."""

    status_code = status.HTTP_409_CONFLICT


def _status_of(error: ValueError) -> int:
    """The HTTP status of a domain error: ours carry it, the cores' are known by class."""
    if isinstance(error, AppError):
        return error.status_code
    # The cores cannot import this module (they stay free of Django); their errors are mapped here.
    from experiments.core.datasets import PathNotAllowed
    from explain.core.zoo import WeightsMissing

    if isinstance(error, PathNotAllowed):
        return status.HTTP_403_FORBIDDEN
    if isinstance(error, WeightsMissing):
        return status.HTTP_409_CONFLICT
    return status.HTTP_400_BAD_REQUEST


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


_ANSWERS = {
    status.HTTP_403_FORBIDDEN: exceptions.PermissionDenied,
    status.HTTP_404_NOT_FOUND: exceptions.NotFound,
    status.HTTP_409_CONFLICT: Conflict,
}


def api_exception_handler(exc, context):
    """DRF's handler, with domain errors (``ValueError``) answered as 4xx instead of a 500."""
    if isinstance(exc, ValueError) and not isinstance(exc, exceptions.APIException):
        code = _status_of(exc)
        message = str(exc) or type(exc).__name__
        logger.info("request refused (%d): %s", code, message)
        answer = _ANSWERS.get(code)
        field = getattr(exc, "field", None) or "detail"
        exc = answer(message) if answer else exceptions.ValidationError({field: message})
    return drf_exception_handler(exc, context)
