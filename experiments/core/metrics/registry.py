"""Metric families by key: ``@register_metric("pointing")`` on the class, ``get_family("pointing")``.

The registry imports every module of :mod:`experiments.core.metrics` on first use, so a new
family is one new file. Keys equal ``Protocol.metric`` and are stored in the database.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Callable, TypeVar

from .base import MetricFamily

F = TypeVar("F", bound=type[MetricFamily])

_FAMILIES: dict[str, MetricFamily] = {}
_loaded = False
_lock = threading.RLock()
_SKIP = {"base", "passes", "registry"}


def register_metric(key: str) -> Callable[[F], F]:
    """Class decorator registering a :class:`MetricFamily` under ``key`` (its protocols' ``metric``).

    A key already taken, or a protocol class whose ``metric`` differs from ``key``, raises.
    """
    if not isinstance(key, str) or not key or key != key.strip():
        raise ValueError(f"metric key must be a non-empty string without surrounding spaces, not {key!r}")

    def decorate(cls: F) -> F:
        if not (isinstance(cls, type) and issubclass(cls, MetricFamily)):
            raise TypeError(f"@register_metric({key!r}) decorates MetricFamily subclasses, not {cls!r}")
        protocol_class = getattr(cls, "protocol_class", None)
        if protocol_class is None or protocol_class.metric != key:
            raise ValueError(f"@register_metric({key!r}): {cls.__name__}.protocol_class must have metric {key!r}")
        with _lock:
            if key in _FAMILIES:
                owner = type(_FAMILIES[key])
                raise ValueError(f"metric key {key!r} is already registered by {owner.__module__}.{owner.__name__}")
            cls.key = key
            _FAMILIES[key] = cls()
        return cls

    return decorate


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        import experiments.core.metrics as package

        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if not info.name.startswith("_") and info.name not in _SKIP:
                importlib.import_module(f"{package.__name__}.{info.name}")
        _loaded = True


def get_family(key: str) -> MetricFamily:
    """The family of ``key`` (a ``Protocol.metric``); unknown keys raise ``ValueError``."""
    _load_all()
    try:
        return _FAMILIES[key]
    except KeyError:
        raise ValueError(f"no metric family {key!r}; known: {sorted(_FAMILIES)}") from None


def family_keys() -> list[str]:
    _load_all()
    return sorted(_FAMILIES)


def family_of(protocol) -> MetricFamily:
    return get_family(protocol.metric)
