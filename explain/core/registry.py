"""Methods by key: ``@register_method("gradcam")`` on the class, ``get_method("gradcam")``.

The registry imports every module of :mod:`explain.core.methods` on first use, so a new
method is one new file. Keys (and aliases) are stored in the database: never rename one,
add an alias instead.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Callable, TypeVar

from explain.core.handle import Classifier
from explain.core.methods.base import Method

M = TypeVar("M", bound=type[Method])

_METHODS: dict[str, type[Method]] = {}
_ALIASES: dict[str, str] = {}
_loaded = False
_loading = False
_lock = threading.RLock()


def register_method(key: str, *, aliases: tuple[str, ...] | list[str] = ()) -> Callable[[M], M]:
    """Class decorator registering a :class:`Method` subclass under ``key`` (and ``aliases``).

    A key or alias already taken raises ``ValueError``.
    """
    if not isinstance(key, str) or not key or key != key.strip():
        raise ValueError(f"method key must be a non-empty string without surrounding spaces, not {key!r}")

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({key!r}) decorates Method subclasses, not {cls!r}")
        with _lock:
            # A class registered from outside the package must meet the built-in keys first. A
            # built-in module imported on its own must not: loading the others from inside its
            # import would reach it again half-initialised (cameras imports msgcam, for one).
            if not _loaded and not _loading and not cls.__module__.startswith(f"{__package__}.methods."):
                _load_all()
            for name in (key, *aliases):
                if name in _METHODS or name in _ALIASES:
                    owner = _METHODS.get(name) or _METHODS[_ALIASES[name]]
                    raise ValueError(f"method key {name!r} is already registered by {owner.__module__}.{owner.__name__}")
            cls.key = key
            cls.aliases = tuple(aliases)
            _METHODS[key] = cls
            for alias in aliases:
                _ALIASES[alias] = key
        return cls

    return decorate


def _load_all() -> None:
    global _loaded, _loading
    if _loaded:
        return
    with _lock:
        if _loaded or _loading:
            return
        _loading = True
        try:
            import explain.core.methods as package

            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
                if info.name.startswith("_") or info.name == "base":
                    continue
                importlib.import_module(f"{package.__name__}.{info.name}")
            _loaded = True
        finally:
            _loading = False


def get_method_class(key: str) -> type[Method]:
    _load_all()
    name = _ALIASES.get(key, key)
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {key!r}; choose one of {method_keys()}") from None


def get_method(key: str) -> Method:
    """A fresh instance of the method registered under ``key`` (or one of its aliases)."""
    return get_method_class(key)()


def method_keys() -> list[str]:
    """Every registered key (aliases excluded), sorted."""
    _load_all()
    return sorted(_METHODS)


def method_support(classifier: Classifier) -> dict[str, str | None]:
    """Every method key → ``None`` where it can explain ``classifier``, else the reason it cannot."""
    _load_all()
    return {k: _METHODS[k].unsupported_reason(classifier) for k in sorted(_METHODS)}


def methods_for(family: "str | Classifier") -> list[str]:
    """Keys of the methods that support a model family ("cnn" or "vit"), or that can explain a
    classifier (:func:`method_support`), sorted."""
    if isinstance(family, Classifier):
        return [k for k, reason in method_support(family).items() if reason is None]
    if family not in ("cnn", "vit"):
        raise ValueError(f"family must be 'cnn' or 'vit', not {family!r}")
    _load_all()
    return sorted(k for k, cls in _METHODS.items() if family in cls.families)
