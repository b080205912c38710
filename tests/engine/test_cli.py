"""``manage.py explain`` through ``call_command`` (no database): output, files and errors."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def chelsea(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "chelsea.png"
    Image.fromarray(skdata.chelsea()).save(path)
    return path


def run(*args):
    out = io.StringIO()
    call_command("explain", *map(str, args), stdout=out)
    return out.getvalue()


def test_json_npy_and_overlay(chelsea, tmp_path):
    npy, png = tmp_path / "map.npy", tmp_path / "overlay.png"
    text = run(chelsea, "--model", "efficientnet_lite0", "--method", "gradcam", "--json",
               "--save-npy", npy, "--out", png, "--param", "layer=bn2")
    payload = json.loads(text)
    assert {"top5", "target", "method", "params", "seconds", "manifest"} <= set(payload)
    probs = [row["probability"] for row in payload["top5"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert payload["target"]["index"] == payload["top5"][0]["index"]
    assert payload["target"]["name"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert payload["method"] == "gradcam" and payload["params"] == {"layer": "bn2"}
    assert payload["manifest"]["weights_checksum"]

    saliency = np.load(npy)
    assert saliency.dtype == np.float32 and saliency.shape == (300, 451)
    assert saliency.min() >= 0 and saliency.max() <= 1 and saliency.max() > 0.9
    # 451×300 → 384×256, centre crop 224 from x = 80: the left and right margins are 0
    margin = int(80 * 451 / 384) - 1
    assert np.all(saliency[:, :margin] == 0) and np.all(saliency[:, -margin:] == 0)
    overlay = Image.open(png)
    assert overlay.size == (451, 300) and overlay.mode == "RGB"


def test_text_output_with_target_and_enhancement(chelsea):
    text = run(chelsea, "--model", "efficientnet_lite0", "--method", "layercam", "--target", "285", "--enhance")
    assert "top-5" in text and "tabby" in text
    assert "explained class 285 (Egyptian cat)" in text and "enhancement" in text


@pytest.mark.parametrize("args,message", [
    (["--model", "nope", "--method", "gradcam"], "unknown model"),
    (["--model", "efficientnet_lite0", "--method", "nope"], "unknown method"),
    (["--model", "efficientnet_lite0", "--method", "gradcam", "--param", "size=3"], "no parameter"),
    (["--model", "efficientnet_lite0", "--method", "rise", "--param", "masks=zero"], "masks"),
    (["--model", "efficientnet_lite0", "--method", "gradcam", "--param", "layer"], "NAME=VALUE"),
    (["--model", "efficientnet_lite0", "--method", "gradcam", "--target", "1000"], "out of range"),
])
def test_clear_errors(chelsea, args, message):
    with pytest.raises(CommandError, match=message):
        run(chelsea, *args)


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(CommandError, match="not an image"):
        run(bad, "--model", "efficientnet_lite0", "--method", "gradcam")
