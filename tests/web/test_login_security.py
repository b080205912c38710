"""Logins a shared server must refuse: Unicode digits, password guessing, and a changed password's
old token and sessions."""
from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from tests.support import PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 3


def _api_login(login: str, password: str, address: str = "10.0.0.1"):
    return APIClient(REMOTE_ADDR=address).post("/api/auth/token/", {"login": login, "password": password},
                                               format="json")


def _page_login(login: str, password: str, address: str = "10.0.0.1"):
    return Client(REMOTE_ADDR=address).post("/login/", {"username": login, "password": password})


@pytest.mark.parametrize("login", ["¹", "²³", "٣٤٥"])
def test_unicode_digits_are_a_failed_login_not_a_server_error(alice, login):
    response = _api_login(login, PASSWORD)
    assert response.status_code == 400
    assert "wrong password" in str(response.json())
    page = _page_login(login, PASSWORD)
    assert page.status_code == 200 and b"correct username" in page.content.lower()


def test_out_of_range_account_number_is_a_failed_login(alice):
    assert _api_login("9" * 40, PASSWORD).status_code == 400


@override_settings(AXES_FAILURE_LIMIT=LIMIT)
def test_wrong_passwords_lock_the_account_on_the_api_and_the_page(alice, bob):
    for _ in range(LIMIT - 1):
        assert _api_login("alice", "wrong", address="10.0.0.1").status_code == 400
    # The LIMIT-th failure locks the account at once.
    assert _api_login("alice", "wrong", address="10.0.0.1").status_code == 429
    # Locked: even the right password is refused, with the cool-off in the message.
    locked = _api_login("alice", PASSWORD, address="10.0.0.1")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.json()["detail"] and "15 minutes" in locked.json()["detail"]
    assert locked["Retry-After"] == "900"
    # Per account: from another address, by name or by account number, on the page too.
    assert _api_login("alice", PASSWORD, address="10.0.0.2").status_code == 429
    assert _api_login(str(alice.account.number), PASSWORD, address="10.0.0.3").status_code == 429
    page = _page_login("alice", PASSWORD, address="10.0.0.4")
    assert page.status_code == 429 and b"Too many failed logins" in page.content
    # Another account from another address is not affected.
    assert _api_login("bob", PASSWORD, address="10.0.0.5").status_code == 200


@override_settings(AXES_FAILURE_LIMIT=LIMIT)
def test_wrong_passwords_from_one_address_lock_that_address(alice, bob):
    for i in range(LIMIT):
        _page_login(f"nobody{i}", "wrong", address="10.0.1.1")  # guessing across names
    # Another address is not affected (tried first: attempts at a locked address count too).
    assert _page_login("bob", PASSWORD, address="10.0.1.2").status_code == 302  # logged in
    assert _page_login("bob", PASSWORD, address="10.0.1.1").status_code == 429
    assert _api_login("bob", PASSWORD, address="10.0.1.1").status_code == 429


@override_settings(AXES_FAILURE_LIMIT=LIMIT)
def test_the_lock_ends_after_the_cool_off(alice):
    for _ in range(LIMIT):
        _api_login("alice", "wrong")
    assert _api_login("alice", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert _api_login("alice", PASSWORD).status_code == 200


def test_a_password_change_rotates_the_token_and_ends_other_sessions(alice):
    token = _api_login("alice", PASSWORD).json()["token"]
    other = Client()
    assert other.login(username="alice", password=PASSWORD)
    assert other.get("/account/").status_code == 200
    current = Client()
    current.login(username="alice", password=PASSWORD)
    new_password = "another-Long-passphrase-77"
    response = current.post("/api/account/password/", {"old_password": PASSWORD, "new_password": new_password},
                            content_type="application/json")
    assert response.status_code == 204
    # The old token no longer authenticates; a fresh one is issued on request.
    assert APIClient(HTTP_AUTHORIZATION=f"Token {token}").get("/api/account/").status_code in (401, 403)
    fresh = _api_login("alice", new_password).json()["token"]
    assert fresh != token
    assert APIClient(HTTP_AUTHORIZATION=f"Token {fresh}").get("/api/account/").status_code == 200
    # The other browser is logged out; the one that changed the password is not.
    assert other.get("/account/").status_code == 302
    assert current.get("/account/").status_code == 200


def test_a_password_change_on_the_page_rotates_the_token_too(alice):
    token = _api_login("alice", PASSWORD).json()["token"]
    page = Client()
    page.login(username="alice", password=PASSWORD)
    response = page.post("/account/", {"old_password": PASSWORD, "new_password1": "another-Long-passphrase-77",
                                       "new_password2": "another-Long-passphrase-77"})
    assert response.status_code == 302
    assert APIClient(HTTP_AUTHORIZATION=f"Token {token}").get("/api/account/").status_code in (401, 403)
    assert page.get("/account/").status_code == 200
