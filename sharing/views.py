"""The public side of a share: a read-only page and the files it shows, for anyone with the token."""
from __future__ import annotations

from django.http import FileResponse, Http404
from django.shortcuts import render
from django.views.decorators.http import require_safe

from . import registry
from .selectors import share_get_active


@require_safe  # read-only links: GET and HEAD, 405 for anything else
def public(request, token: str):
    share = share_get_active(token=token)
    spec = registry.get_view(share.view)
    context = {"share": share, "object": share.target, **spec.context(share.target, share)}
    response = render(request, spec.template, context)
    response["X-Robots-Tag"] = "noindex"
    response["Referrer-Policy"] = "no-referrer"  # keep the token out of other sites' logs
    return response


@require_safe
def public_file(request, token: str, name: str):
    share = share_get_active(token=token)
    spec = registry.get_view(share.view)
    found = spec.files(share.target, share, name)
    if found is None:
        raise Http404("not part of this share")
    field, content_type, download = found
    return FileResponse(field.open("rb"), content_type=content_type, as_attachment=bool(download),
                        filename=download or "")
