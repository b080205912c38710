"""Input images: uploads and the bundled sample photographs, their preprocessed model inputs, and
their deletion with everything made from them."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import redis
import torch

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from saliency_site import redis_clients
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


#: Preprocessed inputs this worker process made or fetched last. A set's prediction, its maps and
#: every later Generate on it read the same stored photo, and a phone's 12-megapixel PNG takes about
#: half a second to decode and resize (a 451×300 one 9 ms).
INPUT_CACHE_SIZE = 16
#: The same inputs shared through Redis for this long (seconds), about 0.6 MB each at 224×224: one
#: Generate's jobs run on several worker processes, and only the first to reach a photo decodes it.
SHARED_INPUT_TTL_S = 600
SHARED_INPUT_TIMEOUT_S = 0.5
_inputs: OrderedDict[str, tuple[torch.Tensor, imaging.Geometry]] = OrderedDict()
_inputs_lock = threading.Lock()
_shared: redis.Redis | None = None


def _shared_inputs() -> redis.Redis:
    global _shared
    with _inputs_lock:
        if _shared is None:
            _shared = redis_clients.fail_fast(settings.REDIS_URL, SHARED_INPUT_TIMEOUT_S)
        return _shared


def _input_key(image: InputImage, classifier, region: str) -> str:
    # Everything ``imaging.preprocess`` reads; a stored photo never changes under its checksum.
    parts = (image.pk, image.sha256, classifier.family, classifier.resize_size, classifier.input_size,
             tuple(classifier.mean), tuple(classifier.std), region)
    return "saliency:input:" + hashlib.sha256(repr(parts).encode()).hexdigest()


def _encoded(x: torch.Tensor, geometry: imaging.Geometry) -> bytes:
    header = {"shape": list(x.shape), "dtype": str(x.numpy().dtype), "geometry": dataclasses.asdict(geometry)}
    return json.dumps(header).encode() + b"\n" + x.numpy().tobytes()


def _decoded(data: bytes) -> tuple[torch.Tensor, imaging.Geometry]:
    head, _, body = data.partition(b"\n")
    header = json.loads(head)
    x = np.frombuffer(body, dtype=header["dtype"]).reshape(header["shape"])
    return torch.from_numpy(x.copy()), imaging.Geometry(**header["geometry"])


def _shared_get(key: str):
    try:
        data = _shared_inputs().get(key)
    except redis.RedisError as error:        # Redis away or slow: the photo is decoded here
        logger.debug("no shared input %s: %s", key, error)
        return None
    return None if data is None else _decoded(data)


def _shared_set(key: str, made) -> None:
    try:
        _shared_inputs().set(key, _encoded(*made), ex=SHARED_INPUT_TTL_S)
    except redis.RedisError as error:
        logger.debug("input %s not shared: %s", key, error)


def image_input_read(*, image: InputImage, classifier, region: str = "crop") -> tuple[torch.Tensor, imaging.Geometry]:
    """``(3×S×S normalised input, geometry)`` of ``image`` for ``classifier`` (``imaging.preprocess``),
    from this process's cache, else from the one Redis shares between workers, else decoded and
    shared. The input is the caller's own copy.
    """
    key = _input_key(image, classifier, region)
    with _inputs_lock:
        made = _inputs.get(key)
        if made is not None:
            _inputs.move_to_end(key)
    if made is None:
        made = _shared_get(key)
        if made is None:
            made = imaging.preprocess(imaging.load_image(image.file.path), classifier, region=region)
            _shared_set(key, made)
        with _inputs_lock:
            _inputs[key] = made
            while len(_inputs) > INPUT_CACHE_SIZE:
                _inputs.popitem(last=False)
    x, geometry = made
    return x.clone(), geometry
