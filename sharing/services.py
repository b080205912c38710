"""Creating and revoking share links."""
from __future__ import annotations

import secrets

from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from saliency_site.errors import InputError, NotFound

from . import registry
from .models import Share


class ShareError(NotFound):
    """The object cannot be shared: not the user's, or an unknown view (answered as "not found")."""


def share_create(*, owner, view: str, object_id: int, options: dict | None = None) -> Share:
    """A new read-only link to one of ``owner``'s objects, shown as ``view``.

    Raises ``ShareError`` when the view is unknown or the object is not the owner's
    (the same message as for a missing object, so ids of others' objects leak nothing).
    """
    try:
        spec = registry.get_view(view)
    except ValueError as error:
        raise ShareError(str(error)) from None
    obj = spec.model.objects.filter(pk=object_id).first()
    if obj is None or spec.owner_of(obj) != owner.pk:
        raise ShareError(f"you have no {view} #{object_id} to share")
    try:
        clean_options = spec.options(dict(options or {}))
    except ValueError as error:  # bad options: a 400 about them, not a 404
        raise InputError(str(error), field="options") from None
    return Share.objects.create(
        owner=owner,
        token=secrets.token_urlsafe(32),
        content_type=ContentType.objects.get_for_model(spec.model),
        object_id=obj.pk,
        view=view,
        title=spec.title(obj)[:200],
        options=clean_options,
    )


def share_revoke(*, share: Share) -> Share:
    """Revoke a link: from now on it answers 404. Revoking twice changes nothing."""
    if share.revoked_at is None:
        share.revoked_at = timezone.now()
        share.save(update_fields=["revoked_at"])
    return share
