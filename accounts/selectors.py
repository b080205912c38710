"""Reads of the accounts app."""
from __future__ import annotations

from django.contrib.auth import get_user_model

from .models import ACCOUNT_NUMBER_MAX, ACCOUNT_NUMBER_MIN, Account

User = get_user_model()


def is_account_number(text: str) -> bool:
    """Whether ``text`` reads as an account number: ASCII digits only (``str.isdigit`` also
    accepts "¹" or "²³", which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def username_for_login(identifier: str) -> str:
    """The username an identifier names: a username as typed, or the owner of an account number.

    Usernames cannot be all digits, so an all-digit identifier is always an account number.
    An unknown number (or one out of the numbers' range) returns the identifier unchanged
    (authentication then fails normally).
    """
    identifier = (identifier or "").strip()
    if is_account_number(identifier) and ACCOUNT_NUMBER_MIN <= int(identifier) <= ACCOUNT_NUMBER_MAX:
        account = Account.objects.select_related("user").filter(number=int(identifier)).first()
        if account is not None:
            return account.user.get_username()
    return identifier


def account_for(user) -> Account | None:
    return Account.objects.filter(user=user).first()
