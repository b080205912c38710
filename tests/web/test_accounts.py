"""Accounts: registration, random account numbers, login by name or number, passwords, API tokens."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts.models import ACCOUNT_NUMBER_MAX, ACCOUNT_NUMBER_MIN, Account

from tests.support import PASSWORD

pytestmark = pytest.mark.django_db


def test_register_page_creates_user_with_random_nine_digit_number(client):
    response = client.post("/register/", {"username": "carol", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/welcome/"
    account = Account.objects.get(user__username="carol")
    assert ACCOUNT_NUMBER_MIN <= account.number <= ACCOUNT_NUMBER_MAX
    page = client.get("/welcome/")
    assert str(account.number) in page.content.decode()
    # The password is stored hashed, never in clear text.
    assert PASSWORD not in get_user_model().objects.get(username="carol").password


def test_account_numbers_are_not_sequential():
    client = APIClient()
    numbers = []
    for i in range(6):
        response = client.post("/api/auth/register/", {"username": f"user{i}x", "password": PASSWORD}, format="json")
        assert response.status_code == 201, response.content
        numbers.append(response.json()["account_number"])
    assert len(set(numbers)) == 6
    steps = {b - a for a, b in zip(numbers, numbers[1:])}
    assert steps != {1}, "account numbers must not reveal the user count"


@pytest.mark.parametrize("username, password, fragment", [
    ("dave", "123", "too short"),
    ("dave", "password123", "too common"),
    ("12345", PASSWORD, "only digits"),
    ("", PASSWORD, "username"),
])
def test_register_refuses_bad_input(username, password, fragment):
    response = APIClient().post("/api/auth/register/", {"username": username, "password": password}, format="json")
    assert response.status_code == 400
    assert fragment in response.content.decode().lower()
    assert not get_user_model().objects.filter(username=username).exists()


def test_duplicate_username_is_refused(alice):
    response = APIClient().post("/api/auth/register/", {"username": "ALICE", "password": PASSWORD}, format="json")
    assert response.status_code == 400 and "taken" in response.content.decode()


@pytest.mark.parametrize("by", ["username", "number"])
def test_login_by_username_or_account_number(client, alice, by):
    identifier = alice.username if by == "username" else str(alice.account.number)
    response = client.post("/login/", {"username": identifier, "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/account/").status_code == 200


def test_login_with_wrong_password_or_unknown_number_fails(client, alice):
    assert client.post("/login/", {"username": alice.username, "password": "wrong"}).status_code == 200
    assert client.post("/login/", {"username": "999999999" if alice.account.number != 999999999 else "100000000",
                                   "password": PASSWORD}).status_code == 200
    assert client.get("/account/").status_code == 302  # still anonymous: redirected to the login page


def test_account_page_shows_name_and_number_and_changes_password(client, alice):
    client.force_login(alice)
    page = client.get("/account/").content.decode()
    assert alice.username in page and str(alice.account.number) in page
    new = "another-Good-passphrase-77"
    wrong = client.post("/account/", {"old_password": "nope", "new_password1": new, "new_password2": new})
    assert "current password is wrong" in wrong.content.decode()
    ok = client.post("/account/", {"old_password": PASSWORD, "new_password1": new, "new_password2": new})
    assert ok.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new)
    assert client.get("/account/").status_code == 200  # the session survives the change


def test_logout_needs_post_and_ends_the_session(client, alice):
    client.force_login(alice)
    assert client.post("/logout/").status_code == 302
    assert client.get("/account/").status_code == 302


def test_token_by_account_number_authenticates_api_calls(alice):
    anonymous = APIClient()
    assert anonymous.get("/api/account/").status_code in (401, 403)
    response = anonymous.post("/api/auth/token/", {"login": str(alice.account.number), "password": PASSWORD},
                              format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    authed = APIClient(HTTP_AUTHORIZATION=f"Token {token}")
    me = authed.get("/api/account/").json()
    assert me == {"username": "alice", "account_number": alice.account.number}
    # Replacing the token makes the old one stop working.
    new = authed.post("/api/account/token/").json()["token"]
    assert new != token
    assert APIClient(HTTP_AUTHORIZATION=f"Token {token}").get("/api/account/").status_code in (401, 403)
    assert APIClient(HTTP_AUTHORIZATION=f"Token {new}").get("/api/account/").status_code == 200


def test_token_refused_for_wrong_password(alice):
    response = APIClient().post("/api/auth/token/", {"login": "alice", "password": "x"}, format="json")
    assert response.status_code == 400


def test_password_change_api_requires_old_password(alice_api, alice):
    bad = alice_api.post("/api/account/password/", {"old_password": "x", "new_password": "zz-Top-secret-1234"},
                         format="json")
    assert bad.status_code == 400
    weak = alice_api.post("/api/account/password/", {"old_password": PASSWORD, "new_password": "1234"}, format="json")
    assert weak.status_code == 400
    ok = alice_api.post("/api/account/password/", {"old_password": PASSWORD, "new_password": "zz-Top-secret-1234"},
                        format="json")
    assert ok.status_code == 204
    alice.refresh_from_db()
    assert alice.check_password("zz-Top-secret-1234")


def test_account_page_creates_token(client, alice):
    client.force_login(alice)
    client.post("/account/token/")
    from rest_framework.authtoken.models import Token

    token = Token.objects.get(user=alice)
    assert token.key in client.get("/account/").content.decode()
