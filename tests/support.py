"""Helpers the tests import (fixtures built on them live in tests/conftest.py)."""
from __future__ import annotations

PASSWORD = "a-Long-enough-passphrase-42"


def make_user(name: str):
    from accounts.services import account_register

    return account_register(username=name, password=PASSWORD).user
