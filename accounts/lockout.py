"""The answer to a login refused by the throttle (``AXES_LOCKOUT_CALLABLE``).

django-axes counts the failures and decides; this module only says so, in our words: JSON
for the API, the login page with the message for a person. Both answer 429.
"""
from __future__ import annotations

import math

from axes.helpers import get_cool_off
from django.http import JsonResponse
from django.shortcuts import render

from .forms import LoginForm

LOCKED_STATUS = 429


def lockout_message(request) -> str:
    cool_off = get_cool_off(request)
    minutes = max(1, math.ceil(cool_off.total_seconds() / 60)) if cool_off else None
    if minutes is None:
        return "Too many failed logins: ask an administrator to unlock the account."
    return f"Too many failed logins, try again in {minutes} minute{'s' if minutes != 1 else ''}."


def lockout_response(request, original_response=None, credentials=None):
    message = lockout_message(request)
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=LOCKED_STATUS)
    form = LoginForm(request, data=None)
    return render(request, "accounts/login.html", {"form": form, "lockout": message, "next": request.POST.get("next", "")},
                  status=LOCKED_STATUS)
