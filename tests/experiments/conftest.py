"""Fixtures of the experiments tests: a user, the built-in model rows, the bundled localisation set."""
from __future__ import annotations

import pytest
import torch

PASSWORD = "a-Long-enough-passphrase-42"


@pytest.fixture(autouse=True)
def modest_threads():
    """One intra-op thread: on a shared 2-core machine, thread synchronisation costs more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def lite0(db):
    from explain.services import builtin_models_sync

    row = {r.builtin_key: r for r in builtin_models_sync()}["efficientnet_lite0"]
    assert row.weights_present, "efficientnet_lite0's packaged weights should be installed"
    return row


def make_user(name: str):
    from accounts.services import account_register

    return account_register(username=name, password=PASSWORD).user


@pytest.fixture()
def alice(db):
    return make_user("alice")


@pytest.fixture()
def bob(db):
    return make_user("bob")


@pytest.fixture()
def alice_api(alice):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.fixture()
def bob_api(bob):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(bob)
    return client


LOCALISATION = {"kind": "sample-localisation", "subset": {"mode": "first", "n": 3}}
