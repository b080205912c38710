"""Input images: uploads and the bundled sample photographs, and their deletion with everything made from them."""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from saliency_site.errors import InputError

from ..core import imaging
from ..models import InputImage
from .removal import delete_files_on_commit, explanation_set_delete

logger = logging.getLogger(__name__)


SAMPLES: dict[str, str] = {
    "chelsea": "Chelsea the cat",
    "coffee": "Cup of coffee",
    "astronaut": "Astronaut",
    "rocket": "Rocket launch",
}


def _sample_image(key: str):
    from PIL import Image
    import skimage.data

    if key not in SAMPLES:
        raise InputError(f"unknown sample {key!r}; choose one of {sorted(SAMPLES)}")
    return Image.fromarray(getattr(skimage.data, key)()).convert("RGB")


def image_create(*, owner, upload=None, sample: str | None = None) -> InputImage:
    """Store an uploaded image (checked: decodable, not truncated, not huge) or a bundled sample.

    The original is re-encoded as PNG (nothing but pixels is kept) and a display JPEG of at
    most ``InputImage.DISPLAY_MAX`` pixels a side is made for the pages.
    """
    if (upload is None) == (sample is None):
        raise InputError("send either an image file or the name of a sample")
    if upload is not None:
        size = getattr(upload, "size", None)
        limit = settings.MAX_IMAGE_UPLOAD_BYTES  # the pixel limit is ``imaging.MAX_PIXELS``
        if size is not None and size > limit:
            raise imaging.ImageError(f"the image file is {size / 2**20:.1f} MB; at most {limit // 2**20} MB")
        image = imaging.load_image(upload)
        name = Path(getattr(upload, "name", "") or "upload").name[:200]
    else:
        image = _sample_image(sample)
        name = SAMPLES[sample]
    png = io.BytesIO()
    image.save(png, format="PNG")
    data = png.getvalue()
    display = image.copy()
    display.thumbnail((InputImage.DISPLAY_MAX, InputImage.DISPLAY_MAX))
    jpeg = io.BytesIO()
    display.save(jpeg, format="JPEG", quality=90)
    row = InputImage(owner=owner, name=name, width=image.width, height=image.height,
                     display_width=display.width, display_height=display.height,
                     sha256=hashlib.sha256(data).hexdigest())
    row.file.save("image.png", ContentFile(data), save=False)
    row.display_file.save("display.jpg", ContentFile(jpeg.getvalue()), save=False)
    row.save()
    return row


@transaction.atomic
def image_delete(*, image: InputImage) -> None:
    """Delete an image with every set made from it, and their files."""
    for explanation_set in image.explanation_sets.all():
        explanation_set_delete(explanation_set=explanation_set)
    delete_files_on_commit([image.file, image.display_file])
    image.delete()
