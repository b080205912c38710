"""On the real EfficientNet-Lite0 ImageNet weights every CNN method points at the object.

Object boxes were drawn by hand on the 224×224 centre crops and checked on an overlay
(``(y0, x0, y1, x1)``, end-exclusive): the cat's face fills chelsea's whole crop, so its box
is the crop and only the class is checked there; coffee's box holds the cup with its handle
and leaves out the spoon, the saucer's front and the table. The discriminative check is the
side-by-side photo: explaining the cat class must point into the cat half, explaining the
espresso class into the cup half. Overlays of every map with its box
and maximum are written to ``$TMPDIR/saliency-real-weights-<image>.png`` for a visual check.
Score-CAM runs on ``blocks.5`` (192 channels, 192 forward passes) and RISE with 200 masks to
keep the suite quick.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from explain.core.engine import explain
from explain.core.imaging import preprocess
from explain.core.zoo import load_classifier

skdata = pytest.importorskip("skimage.data")

BOXES = {"chelsea": (0, 0, 224, 224), "coffee": (0, 20, 165, 200)}
EXPECTED = {"chelsea": {281, 282, 285}, "coffee": {967, 968, 504}}   # tabby/tiger/Egyptian cat; espresso/cup/coffee mug
METHODS = {
    "gradcam": None, "gradcampp": None, "xgradcam": None, "layercam": None,
    "groupcam": None, "msgcam": None, "cameras": None,
    "scorecam": {"layer": "blocks.5"}, "rise": {"masks": 200}, "lrp": None,
}


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("efficientnet_lite0")


@pytest.fixture(scope="module", params=sorted(BOXES))
def photo(request, classifier):
    name = request.param
    x, _ = preprocess(Image.fromarray(getattr(skdata, name)()), classifier)
    overlays: dict[str, np.ndarray] = {}
    yield name, x[None], overlays
    if overlays:
        pixels = classifier.denormalize(x[None])[0].permute(1, 2, 0).clamp(0, 1).numpy()
        y0, x0, y1, x1 = BOXES[name]
        tiles = []
        for s in overlays.values():
            heat = np.stack([s, np.zeros_like(s), 1 - s], axis=-1)
            tile = 0.55 * pixels + 0.45 * heat
            tile[y0, x0:x1] = tile[y1 - 1, x0:x1] = tile[y0:y1, x0] = tile[y0:y1, x1 - 1] = (0, 1, 0)
            iy, ix = np.unravel_index(s.argmax(), s.shape)
            tile[max(iy - 3, 0):iy + 4, max(ix - 3, 0):ix + 4] = (1, 1, 0)
            tiles.append(tile)
        path = os.path.join(tempfile.gettempdir(), f"saliency-real-weights-{name}.png")
        Image.fromarray((np.concatenate(tiles, axis=1) * 255).astype(np.uint8)).save(path)


@pytest.mark.parametrize("key", list(METHODS))
def test_maximum_lies_on_the_object(classifier, photo, key):
    name, x, overlays = photo
    [e] = explain(classifier, x, key, params=METHODS[key], seed=0)
    assert e.target in EXPECTED[name], classifier.class_names[e.target]
    s = e.saliency.numpy()
    assert s.max() > s.min()
    overlays[key] = (s - s.min()) / (s.max() - s.min())
    iy, ix = np.unravel_index(s.argmax(), s.shape)
    y0, x0, y1, x1 = BOXES[name]
    assert y0 <= iy < y1 and x0 <= ix < x1, f"{key}: maximum at {(iy, ix)} outside the {name} box"
    if name == "coffee":  # more saliency mass inside the box than its share of the area
        box = np.zeros_like(s, dtype=bool)
        box[y0:y1, x0:x1] = True
        assert s[box].sum() / s.sum() > box.mean()
    assert torch.isfinite(e.saliency).all()


@pytest.fixture(scope="module")
def side_by_side(classifier):
    """Chelsea's crop squeezed into the left half, coffee's into the right half (224×224)."""
    halves = []
    for name in ("chelsea", "coffee"):
        x, _ = preprocess(Image.fromarray(getattr(skdata, name)()), classifier)
        halves.append(torch.nn.functional.interpolate(x[None], size=(224, 112), mode="bilinear",
                                                      align_corners=False, antialias=True))
    return torch.cat(halves, dim=3)


@pytest.mark.parametrize("key", ["gradcam", "gradcampp", "xgradcam", "layercam", "groupcam", "msgcam"])
def test_class_decides_the_half(classifier, side_by_side, key):
    with torch.no_grad():
        probs = torch.softmax(classifier.module(side_by_side), dim=1)[0]
    cat = max(EXPECTED["chelsea"], key=lambda c: float(probs[c]))
    cup = max(EXPECTED["coffee"], key=lambda c: float(probs[c]))
    out = explain(classifier, side_by_side.expand(2, -1, -1, -1), key, targets=[cat, cup])
    for e, half in zip(out, ("left", "right")):
        ix = int(e.saliency.flatten().argmax()) % 224
        assert (ix < 112) == (half == "left"), f"{key} for {classifier.class_names[e.target]}: maximum at x={ix}"
