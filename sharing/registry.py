"""Which objects can be shared, and how each view of them is shown.

An app registers a view name for one of its models::

    register_view("explanation", ExplanationSet, template="frontend/shared_explanation.html",
                  context=lambda obj, share: {...}, owner_of=lambda obj: obj.owner_id,
                  files=lambda obj, share, name: path_or_None)

``files`` resolves the name of a file the shared page fetches (image, map) to a file field
of the object, or None where the share does not cover it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from django.db import models


@dataclass(frozen=True)
class ShareView:
    name: str
    model: type[models.Model]
    template: str
    context: Callable[[Any, Any], dict]
    owner_of: Callable[[Any], int]
    files: Callable[[Any, Any, str], Any]
    options: Callable[[dict], dict]
    title: Callable[[Any], str]


_VIEWS: dict[str, ShareView] = {}


def register_view(name: str, model: type[models.Model], *, template: str, context, owner_of, files,
                  options=lambda raw: {}, title=str) -> None:
    if name in _VIEWS and _VIEWS[name].model is not model:
        raise ValueError(f"share view {name!r} is already registered for {_VIEWS[name].model.__name__}")
    _VIEWS[name] = ShareView(name, model, template, context, owner_of, files, options, title)


def get_view(name: str) -> ShareView:
    try:
        return _VIEWS[name]
    except KeyError:
        raise ValueError(f"unknown share view {name!r}; choose one of {sorted(_VIEWS)}") from None


def view_names() -> list[str]:
    return sorted(_VIEWS)
