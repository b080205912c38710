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
    assert ok.status_code == 200
    alice.refresh_from_db()
    assert alice.check_password("zz-Top-secret-1234")


def test_account_page_creates_token(client, alice):
    client.force_login(alice)
    client.post("/account/token/")
    from rest_framework.authtoken.models import Token

    token = Token.objects.get(user=alice)
    assert token.key in client.get("/account/").content.decode()


# -- input that must be refused, not crash ---------------------------------------------------------

@pytest.mark.parametrize("login", ["¹", "²³", "１２３４５６７８９", "9" * 40])
def test_unicode_digits_or_overlong_numbers_are_a_failed_login_not_a_500(client, alice, login):
    # str.isdigit() accepts superscripts and full-width digits, which int() or the column refuse.
    api = APIClient().post("/api/auth/token/", {"login": login, "password": PASSWORD}, format="json")
    assert api.status_code == 400 and "wrong password" in str(api.json()["detail"])
    page = client.post("/login/", {"username": login, "password": PASSWORD})
    assert page.status_code == 200 and "correct username and password" in page.content.decode()


# -- login throttling ------------------------------------------------------------------------------

@pytest.fixture()
def throttle(settings):
    """A limit of 3 failures and a five-second cool-off, so a test can wait it out."""
    from datetime import timedelta

    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(seconds=5)
    return settings


def _page_login(client, login, password, address):
    return client.post("/login/", {"username": login, "password": password}, REMOTE_ADDR=address)


def _api_login(login, password, address):
    return APIClient().post("/api/auth/token/", {"login": login, "password": password}, format="json",
                            REMOTE_ADDR=address)


def test_wrong_passwords_lock_the_account_on_page_and_api(client, alice, bob, throttle):
    for _ in range(2):
        assert _page_login(client, "alice", "wrong", "10.0.0.1").status_code == 200
    assert _page_login(client, "alice", "wrong", "10.0.0.1").status_code == 429  # the third failure locks
    # The right password no longer helps, on the page or through the API, from any address.
    page = _page_login(client, "alice", PASSWORD, "10.0.0.1")
    assert page.status_code == 429
    assert "Too many failed logins, try again in 1 minute" in page.content.decode()
    api = _api_login("alice", PASSWORD, "10.0.0.9")
    assert api.status_code == 429 and api.json() == {"detail": "Too many failed logins, try again in 1 minute."}
    # By account number: the same account, the same lock.
    assert _api_login(str(alice.account.number), PASSWORD, "10.0.0.9").status_code == 429
    assert client.get("/account/").status_code == 302  # never logged in
    # Another account from another address is not affected.
    assert _api_login("bob", PASSWORD, "10.0.0.2").status_code == 200
    # The address that made the attempts is locked for every account (per-address limit).
    assert _api_login("bob", PASSWORD, "10.0.0.1").status_code == 429


def test_api_failures_count_too_and_the_lock_lifts_after_the_cool_off(client, alice, throttle):
    import time

    for _ in range(2):
        assert _api_login(str(alice.account.number), "wrong", "10.0.0.3").status_code == 400
    assert _api_login(str(alice.account.number), "wrong", "10.0.0.3").status_code == 429
    assert _page_login(client, "alice", PASSWORD, "10.0.0.4").status_code == 429
    time.sleep(5.2)
    assert _page_login(client, "alice", PASSWORD, "10.0.0.4").status_code == 302
    assert client.get("/account/").status_code == 200
    assert _api_login("alice", PASSWORD, "10.0.0.3").status_code == 200


# -- password change -------------------------------------------------------------------------------

def test_password_change_rotates_the_token_and_ends_other_sessions(alice):
    from django.test import Client

    old_token = APIClient().post("/api/auth/token/", {"login": "alice", "password": PASSWORD},
                                 format="json").json()["token"]
    here, elsewhere = Client(), Client()
    for c in (here, elsewhere):
        assert c.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    new = "another-Good-passphrase-77"
    assert here.post("/account/", {"old_password": PASSWORD, "new_password1": new,
                                   "new_password2": new}).status_code == 302
    assert here.get("/account/").status_code == 200          # this session stays
    assert elsewhere.get("/account/").status_code == 302     # the other one is logged out
    assert APIClient(HTTP_AUTHORIZATION=f"Token {old_token}").get("/api/account/").status_code in (401, 403)


def test_password_change_through_the_api_answers_the_new_token(alice):
    from django.test import Client

    old_token = APIClient().post("/api/auth/token/", {"login": "alice", "password": PASSWORD},
                                 format="json").json()["token"]
    browser = Client()
    assert browser.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    answer = APIClient(HTTP_AUTHORIZATION=f"Token {old_token}").post(
        "/api/account/password/", {"old_password": PASSWORD, "new_password": "zz-Top-secret-1234"}, format="json")
    assert answer.status_code == 200
    new_token = answer.json()["token"]
    assert new_token != old_token
    assert APIClient(HTTP_AUTHORIZATION=f"Token {old_token}").get("/api/account/").status_code in (401, 403)
    assert APIClient(HTTP_AUTHORIZATION=f"Token {new_token}").get("/api/account/").status_code == 200
    assert browser.get("/account/").status_code == 302
