"""Writes of the accounts app: registration, password change, API tokens."""
from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from .models import ACCOUNT_NUMBER_MAX, ACCOUNT_NUMBER_MIN, Account

User = get_user_model()


def _random_account_number() -> int:
    return ACCOUNT_NUMBER_MIN + secrets.randbelow(ACCOUNT_NUMBER_MAX - ACCOUNT_NUMBER_MIN + 1)


def username_validate(username: str) -> str:
    """A username is unique, not empty, and not all digits (digits mean an account number at login)."""
    username = (username or "").strip()
    if not username:
        raise ValidationError("Choose a username.")
    if len(username) > 150:
        raise ValidationError("A username has at most 150 characters.")
    if username.isdigit():
        raise ValidationError("A username cannot be only digits: those are read as account numbers at login.")
    User.username_validator(username)
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError("That username is taken; choose another.")
    return username


def account_register(*, username: str, password: str) -> Account:
    """Create a user with a validated password and a fresh random account number.

    Raises ``ValidationError`` (username taken or invalid, password refused by Django's validators).
    """
    username = username_validate(username)
    validate_password(password, user=User(username=username))
    with transaction.atomic():
        user = User.objects.create_user(username=username, password=password)
        for _ in range(20):
            try:
                with transaction.atomic():
                    return Account.objects.create(user=user, number=_random_account_number())
            except IntegrityError:
                continue  # the number was taken: draw again
    raise RuntimeError("could not draw a free account number in 20 tries")


def account_change_password(*, user, old_password: str, new_password: str) -> Token:
    """Change the password; the old one must be given. Raises ``ValidationError`` saying what is wrong.

    Whoever knew the old password may hold the API token too, so the token is replaced and the
    new one returned. Other sessions end by themselves (Django checks each session against a
    hash of the password); the caller keeps its own with ``update_session_auth_hash``.
    """
    if not user.check_password(old_password or ""):
        raise ValidationError("The current password is wrong.")
    validate_password(new_password, user=user)
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        return account_token_regenerate(user=user)


def account_token_get(*, user) -> Token:
    """The user's API token, created on first use."""
    token, _ = Token.objects.get_or_create(user=user)
    return token


def account_token_regenerate(*, user) -> Token:
    """Replace the user's API token with a new one (the old one stops working)."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)
