from __future__ import annotations

from django.http import Http404

from .models import Share


def share_get_active(*, token: str) -> Share:
    """The active share with ``token``; a revoked or unknown token raises Http404 (no difference shown)."""
    share = Share.objects.active().select_related("content_type").filter(token=token).first()
    if share is None or share.target is None:
        raise Http404("No such share link (it may have been revoked).")
    return share


def shares_of(user):
    return Share.objects.owned_by(user).select_related("content_type")
