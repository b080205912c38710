"""Defects of the Explain pages: Recent ordering, segment ties, upload messages."""

import io

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from explain.models import ExplanationSet, InputImage

from tests.support import PASSWORD


@pytest.fixture()
def plain_static(settings):
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}


def test_recent_lists_the_six_newest_sets_newest_first(client, alice, lite0):
    image = InputImage.objects.create(owner=alice, name="img", file="x.png", display_file="x.png", width=1,
                                      height=1, display_width=1, display_height=1, sha256="0" * 64)
    made = []
    for _ in range(8):
        made.append(ExplanationSet.objects.create(owner=alice, model=lite0, image=image).pk)
    client.force_login(alice)
    html = client.get("/explain/").content.decode()
    shown = [int(part.split('"')[0]) for part in html.split('href="?set=')[1:]]
    assert shown == made[::-1][:6]


SEGMENT_CASES = """
async () => {
  const { MapView } = await import("/static/frontend/js/mapview.js");
  const view = (map) => Object.assign(Object.create(MapView.prototype), { map: Float32Array.from(map), order: null });
  const kept = (map, ratio) => {
    const v = view(map); const n = v.keepCount(ratio);
    return Array.from(v.ranking().slice(0, n)).sort((a, b) => a - b);
  };
  return {
    // 2 positive of 8; asking for 75 % must keep only the two, never zeros from the top row.
    morethanpositive: kept([0, 0, 0, 0, 0, 0.5, 0, 1], 0.75),
    // a tie at the cut is kept whole, whatever its scan position.
    tie: kept([0.2, 0.9, 0.2, 0, 0.2, 0, 0, 0], 0.25),
    shuffled: kept([0, 0.2, 0, 0.9, 0, 0.2, 0.2, 0], 0.25),
    allzero: kept([0, 0, 0, 0], 1),
    plain: kept([0.1, 0.4, 0.3, 0.2], 0.5),
  };
}
"""


def test_segment_never_keeps_zero_before_positive_and_ignores_scan_order(live_server, plain_static, page):
    page.goto(f"{live_server.url}/login/")
    result = page.evaluate(SEGMENT_CASES)
    assert result["morethanpositive"] == [5, 7]
    assert result["tie"] == [0, 1, 2, 4]
    assert result["shuffled"] == [1, 3, 5, 6]
    assert result["allzero"] == []
    assert result["plain"] == [1, 2]


def test_bad_upload_names_the_users_file_in_our_words(alice_api):
    class RunsCode:
        def __reduce__(self):
            return (print, ("ran",))

    buffer = io.BytesIO()
    torch.save({"weight": RunsCode()}, buffer)
    data = {"name": "m", "architecture": "mobilenet_v2",
            "weights": SimpleUploadedFile("my-finetune.pth", buffer.getvalue())}
    response = alice_api.post("/api/models/", data, format="multipart")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "my-finetune.pth" in detail and "upload.pth" not in detail
    assert "weights_only" not in detail and "False" not in detail


def test_hidden_preview_takes_no_space(live_server, plain_static, page, alice, builtin_models):
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", alice.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/explain/")
    box = page.evaluate("() => document.getElementById('image-preview').getBoundingClientRect().height")
    assert box == 0
