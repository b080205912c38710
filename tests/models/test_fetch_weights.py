"""Fetching a built-in's published weights, from a real HTTP server on loopback standing in for a
lab's mirror (``SALIENCY_WEIGHTS_MIRROR``): a good file is installed where ``import_weights``
puts it and the model classifies; a wrong checksum, a file that does not fit, a truncated
download and no connection are refused with nothing left behind. Nothing leaves the machine."""
from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torchvision.models as tvm
from django.core.management import CommandError, call_command
from django.urls import reverse

from explain import weights_fetch
from explain.core import imaging, zoo
from explain.services import builtin_models_sync, builtin_weights_fetch
from saliency_site.errors import NotAvailable
from tests.support import make_user

LITE0_PATH = "timm/efficientnet_lite0.ra_in1k"
CAT_CLASSES = range(281, 286)          # ImageNet's five domestic cats (tabby … Egyptian cat)


class Mirror(ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes); ``lie_about_length`` (path -> extra bytes) announces a
    Content-Length longer than the body and closes the connection after the body."""

    daemon_threads = True

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.lie_about_length: dict[str, int] = {}
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: Mirror = self.server
        path = self.path.lstrip("/")
        server.requests.append(path)
        body = server.files.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) + server.lie_about_length.get(path, 0)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture()
def mirror(settings):
    server = Mirror()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.WEIGHTS_MIRROR = server.url
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def weights_folder(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(folder))
    return folder


@pytest.fixture()
def lite0_file() -> bytes:
    path = zoo.BUILTIN_MODELS["efficientnet_lite0"].library_file()
    assert path is not None, "efficientnet_lite0's packaged weights should be installed"
    return path.read_bytes()


@pytest.fixture()
def without_lite0_package(monkeypatch):
    """This machine as one without the efficientnet-lite0 package: the built-in's weights are missing."""
    spec = zoo.BUILTIN_MODELS["efficientnet_lite0"]
    monkeypatch.setitem(zoo.BUILTIN_MODELS, "efficientnet_lite0", dataclasses.replace(spec, library_file=lambda: None))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_sources_are_the_libraries_published_files():
    vgg = weights_fetch.source_for("vgg16")
    [candidate] = vgg.candidates
    assert candidate.url == tvm.VGG16_Weights.IMAGENET1K_V1.url
    assert candidate.sha256_prefix == "397923af"              # torch.hub's check, from the file name
    assert candidate.location("http://lab/w/") == "http://lab/w/vgg16-397923af.pth"
    vit = weights_fetch.source_for("vit_b_16")
    assert [c.url for c in vit.candidates] == [
        "https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/resolve/main/model.safetensors",
        "https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/resolve/main/pytorch_model.bin"]
    assert all(c.sha256_prefix == "" for c in vit.candidates)   # timm's config publishes none
    assert vit.candidates[0].location("http://lab") == (
        "http://lab/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/model.safetensors")
    assert set(weights_fetch.LIBRARY_WEIGHTS) == set(zoo.BUILTIN_MODELS)


def test_fetch_installs_checked_weights_and_the_model_classifies(
        db, mirror, weights_folder, lite0_file, without_lite0_package, capsys):
    row = {r.builtin_key: r for r in builtin_models_sync()}["efficientnet_lite0"]
    assert not row.weights_present
    # The hub file is tried first; the mirror has only the .bin, as a state dict.
    mirror.files[f"{LITE0_PATH}/pytorch_model.bin"] = lite0_file
    call_command("fetch_weights", "efficientnet_lite0")
    assert mirror.requests == [f"{LITE0_PATH}/model.safetensors", f"{LITE0_PATH}/pytorch_model.bin"]
    assert leftovers(weights_folder) == ["efficientnet_lite0.safetensors"]
    row.refresh_from_db()
    assert row.weights_present
    assert row.weights_sha256 == zoo.sha256_of(weights_folder / "efficientnet_lite0.safetensors")
    record = row.weights_fetch
    assert record["status"] == "done" and record["url"] == f"{mirror.url}/{LITE0_PATH}/pytorch_model.bin"
    assert record["sha256"] == hashlib.sha256(lite0_file).hexdigest()
    assert "publishes no checksum" in record["checksum"]
    assert "installed efficientnet_lite0 weights" in capsys.readouterr().out

    clf = zoo.load_classifier("efficientnet_lite0", device="cpu")
    assert clf.weights_checksum == row.weights_sha256
    import skimage.data
    from PIL import Image
    import torch

    x, _ = imaging.preprocess(Image.fromarray(skimage.data.chelsea()), clf)
    with torch.no_grad():
        top = int(clf.module(x[None]).argmax())
    assert top in CAT_CLASSES, clf.class_names[top]

    with pytest.raises(CommandError, match="installed already"):
        call_command("fetch_weights", "efficientnet_lite0")


def test_wrong_checksum_is_refused_and_nothing_stored(db, mirror, weights_folder, lite0_file):
    # A real weights file, but not the one whose sha256 torchvision put in the name.
    mirror.files["resnet18-f37072fd.pth"] = lite0_file
    row = {r.builtin_key: r for r in builtin_models_sync()}["resnet18"]
    with pytest.raises(NotAvailable, match="published checksum starts with f37072fd") as caught:
        builtin_weights_fetch(model=row, force=True)
    assert "nothing was installed" in str(caught.value)
    assert leftovers(weights_folder) == []
    row.refresh_from_db()
    assert row.weights_fetch["status"] == "failed" and "f37072fd" in row.weights_fetch["message"]
    assert zoo.weights_file("resnet18") is None or not str(zoo.weights_file("resnet18")).startswith(str(weights_folder))


def test_a_file_that_does_not_fit_is_refused(db, mirror, weights_folder, lite0_file):
    # No checksum to catch it (timm's hub configs publish none): the architecture check does.
    mirror.files["timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/pytorch_model.bin"] = lite0_file
    row = {r.builtin_key: r for r in builtin_models_sync()}["vit_b_16"]
    with pytest.raises(zoo.WeightsInvalid, match="do not fit the architecture"):
        builtin_weights_fetch(model=row, force=True)
    assert leftovers(weights_folder) == []
    row.refresh_from_db()
    assert row.weights_fetch["status"] == "failed"


def test_truncated_download_is_refused(db, mirror, weights_folder, lite0_file, without_lite0_package):
    path = f"{LITE0_PATH}/pytorch_model.bin"
    mirror.files[path] = lite0_file[: len(lite0_file) // 2]
    mirror.lie_about_length[path] = len(lite0_file) - len(lite0_file) // 2
    row = {r.builtin_key: r for r in builtin_models_sync()}["efficientnet_lite0"]
    with pytest.raises(NotAvailable, match=f"incomplete: {len(lite0_file) // 2} of {len(lite0_file)} bytes"):
        builtin_weights_fetch(model=row)
    assert leftovers(weights_folder) == []
    row.refresh_from_db()
    assert not row.weights_present and row.weights_fetch["status"] == "failed"


def test_no_connection_fails_at_once_naming_import_weights(db, settings, weights_folder, without_lite0_package):
    with socket.socket() as probe:          # a port nobody listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.WEIGHTS_MIRROR = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(CommandError) as caught:
        call_command("fetch_weights", "efficientnet_lite0")
    assert time.monotonic() - started < weights_fetch.CONNECT_TIMEOUT   # refused, not waited out
    message = str(caught.value)
    assert "connection was refused" in message
    assert "import_weights efficientnet_lite0 FILE" in message
    assert leftovers(weights_folder) == []


@pytest.mark.django_db(transaction=True)
def test_operators_fetch_button_queues_the_fetch_on_a_worker(client, mirror, lite0_file, celery_worker):
    rows = {r.builtin_key: r for r in builtin_models_sync()}
    row = rows["resnet18"]
    assert not row.weights_present, "this test needs resnet18's weights to be missing"
    url = reverse("frontend:builtin-weights-fetch", args=[row.pk])

    client.force_login(make_user("carol"))
    assert client.post(url).status_code == 403
    row.refresh_from_db()
    assert row.weights_fetch == {} and mirror.requests == []
    page = client.get(reverse("frontend:models")).content.decode()
    assert 'data-testid="fetch-resnet18"' not in page

    staff = make_user("olga")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)
    page = client.get(reverse("frontend:models")).content.decode()
    assert 'data-testid="fetch-resnet18"' in page
    assert 'data-testid="fetch-efficientnet_lite0"' not in page      # present: nothing to fetch
    mirror.files["resnet18-f37072fd.pth"] = lite0_file             # the worker will refuse it
    assert client.post(url).status_code == 302
    row.refresh_from_db()
    assert row.weights_fetch["status"] in ("queued", "running", "failed")
    deadline = time.monotonic() + 60
    while row.weights_fetch.get("status") != "failed" and time.monotonic() < deadline:
        time.sleep(0.3)
        row.refresh_from_db()
    assert row.weights_fetch["status"] == "failed", row.weights_fetch
    assert "published checksum starts with f37072fd" in row.weights_fetch["message"]
    assert mirror.requests == ["resnet18-f37072fd.pth"]
    page = client.get(reverse("frontend:models")).content.decode()
    assert "fetch failed" in page and "f37072fd" in page
