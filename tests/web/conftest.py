"""Fixtures of the web tests: users with API clients, the built-in model rows, small weights files."""
from __future__ import annotations

import io

import pytest
import torch
from rest_framework.test import APIClient

PASSWORD = "a-Long-enough-passphrase-42"


@pytest.fixture(autouse=True)
def one_torch_thread():
    # The jobs these tests run in-process are small; one thread is faster on a shared two-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def builtin_models(db):
    from explain.services import builtin_models_sync

    return {row.builtin_key: row for row in builtin_models_sync()}


@pytest.fixture()
def lite0(builtin_models):
    row = builtin_models["efficientnet_lite0"]
    assert row.weights_present, "efficientnet_lite0's packaged weights should be installed"
    return row


def _user(name: str):
    from accounts.services import account_register

    return account_register(username=name, password=PASSWORD).user


@pytest.fixture()
def alice(db):
    return _user("alice")


@pytest.fixture()
def bob(db):
    return _user("bob")


@pytest.fixture()
def alice_api(alice) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.fixture()
def bob_api(bob) -> APIClient:
    client = APIClient()
    client.force_authenticate(bob)
    return client


def png_bytes(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def state_dict_bytes(architecture: str, num_classes: int, seed: int = 0, fmt: str = "pth") -> bytes:
    """A random-weights state_dict of ``architecture`` as .pth (torch.save) or .safetensors bytes."""
    from explain.core.custom import build_module

    torch.manual_seed(seed)
    state = build_module(architecture, num_classes).state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in state.items()})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
