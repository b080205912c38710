"""A portrait photo stored rotated (EXIF Orientation) is read upright, through the API too."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from explain.core.imaging import load_image

# Orientation 6: the stored pixels must be turned 90° clockwise to be upright.
ROTATE_CLOCKWISE = 6


def _portrait() -> Image.Image:
    """An upright 60 wide × 90 high photo: red top third, green middle, blue bottom."""
    pixels = np.zeros((90, 60, 3), np.uint8)
    pixels[:30, :, 0] = 255
    pixels[30:60, :, 1] = 255
    pixels[60:, :, 2] = 255
    return Image.fromarray(pixels)


def _as_camera_stores_it() -> bytes:
    """The portrait's pixels turned 90° counter-clockwise (90 wide × 60 high), with the tag that undoes it."""
    stored = _portrait().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = ROTATE_CLOCKWISE
    out = io.BytesIO()
    stored.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _bands(image: Image.Image) -> list[int]:
    """The dominant channel of the top, middle and bottom thirds."""
    pixels = np.asarray(image).astype(int)
    h = pixels.shape[0]
    return [int(pixels[a:b].mean(axis=(0, 1)).argmax()) for a, b in ((0, h // 3), (h // 3, 2 * h // 3), (2 * h // 3, h))]


def test_exif_orientation_is_applied_before_anything_else():
    data = _as_camera_stores_it()
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.size == (90, 60)                    # stored sideways
    image = load_image(data)
    assert image.size == (60, 90)                      # upright: portrait
    assert _bands(image) == [0, 1, 2]                  # red on top, blue at the bottom


def test_an_image_without_the_tag_is_left_as_it_is():
    out = io.BytesIO()
    _portrait().save(out, format="PNG")
    image = load_image(out.getvalue())
    assert image.size == (60, 90) and _bands(image) == [0, 1, 2]


@pytest.mark.django_db
def test_uploaded_portrait_is_stored_upright(alice_api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("portrait.jpg", _as_camera_stores_it(), content_type="image/jpeg")
    response = alice_api.post("/api/images/", {"file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["width"], body["height"]) == (60, 90)
    from explain.models import InputImage

    stored = Image.open(InputImage.objects.get(pk=body["id"]).file.path)
    assert stored.size == (60, 90) and _bands(stored.convert("RGB")) == [0, 1, 2]
