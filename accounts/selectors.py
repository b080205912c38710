"""Reads of the accounts app."""
from __future__ import annotations

import re

from django.contrib.auth import get_user_model

from .models import Account

User = get_user_model()

_ACCOUNT_NUMBER = re.compile(r"[0-9]{9}")


def username_for_login(identifier: str) -> str:
    """The username an identifier names: a username as typed, or the owner of an account number.

    Usernames cannot be all digits, so an all-digit identifier is always an account number.
    An unknown number returns the identifier unchanged (authentication then fails normally).
    """
    identifier = (identifier or "").strip()
    # ASCII digits only: ``str.isdigit()`` also accepts "¹" or "²³", which ``int()`` refuses; and an
    # account number has nine digits, so a longer string (out of the column's range) is no number.
    if _ACCOUNT_NUMBER.fullmatch(identifier):
        account = Account.objects.select_related("user").filter(number=int(identifier)).first()
        if account is not None:
            return account.user.get_username()
    return identifier


def account_for(user) -> Account | None:
    return Account.objects.filter(user=user).first()
