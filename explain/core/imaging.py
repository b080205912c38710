"""Reading images and mapping between the original photo and the model's input.

The standard ImageNet preprocessing resizes the shorter side to ``resize_size`` and cuts the
centre ``input_size × input_size``. ``Geometry`` remembers that so a map computed on the
model input can be laid back onto the original pixels (areas the crop cut away are 0).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .handle import Classifier

#: Larger images are refused before decoding (a decompression bomb guard): 50 megapixels.
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """The file is not an image we can read."""


def load_image(source: str | Path | bytes | BinaryIO) -> Image.Image:
    """Open ``source`` as an upright RGB image (its EXIF orientation applied), raising
    ``ImageError`` with a clear message when it is not one."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    name = getattr(source, "name", None) or (str(source) if isinstance(source, (str, Path)) else "the upload")
    name = Path(str(name)).name
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{name} is {width}×{height} pixels; images may have at most {MAX_PIXELS // 1_000_000} megapixels"
                )
            image.load()  # decode now: a truncated file fails here, not later
            # A camera stores a portrait photo's pixels as shot and says how to turn them in its
            # EXIF Orientation tag: turn them first, so every map is of the upright photo.
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image (supported: JPEG, PNG, WebP, BMP, TIFF, GIF)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name} is too large to decode safely") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"{name} is damaged or truncated and cannot be decoded ({error})") from None


@dataclass(frozen=True)
class Geometry:
    """Where the model input sits in the original image.

    The original ``height × width`` image was resized to ``resized_h × resized_w`` and the
    crop ``[top:top+size, left:left+size]`` of that is the model input.
    """

    height: int
    width: int
    resized_h: int
    resized_w: int
    top: int
    left: int
    size: int

    def to_original(self, saliency: np.ndarray | torch.Tensor) -> np.ndarray:
        """An ``size × size`` map → ``height × width`` float32 aligned with the original pixels.

        The map is first placed on the resized canvas (zeros outside the crop), then resized
        bilinearly to the original size.
        """
        saliency = torch.as_tensor(np.asarray(saliency, dtype=np.float32))
        if tuple(saliency.shape) != (self.size, self.size):
            raise ValueError(f"expected a {self.size}×{self.size} map, got {tuple(saliency.shape)}")
        canvas = torch.zeros(self.resized_h, self.resized_w)
        canvas[self.top:self.top + self.size, self.left:self.left + self.size] = saliency
        out = F.interpolate(canvas[None, None], size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out[0, 0].numpy().astype(np.float32)


def preprocess(image: Image.Image, classifier: Classifier) -> tuple[torch.Tensor, Geometry]:
    """Resize the shorter side to ``resize_size``, centre-crop ``input_size``, normalise.

    Returns the ``3×S×S`` input (on the CPU) and the ``Geometry`` to map results back.
    """
    pixels, geometry = to_pixels(image, classifier.resize_size, classifier.input_size)
    return classifier.normalize(pixels[None])[0], geometry


def to_pixels(image: Image.Image, resize_size: int, crop_size: int) -> tuple[torch.Tensor, Geometry]:
    """The ``3×crop×crop`` tensor in [0, 1] and its geometry (no normalisation)."""
    image = image.convert("RGB")
    width, height = image.size
    scale = resize_size / min(width, height)
    resized_w, resized_h = max(crop_size, round(width * scale)), max(crop_size, round(height * scale))
    resized = image.resize((resized_w, resized_h), Image.BILINEAR)
    top, left = (resized_h - crop_size) // 2, (resized_w - crop_size) // 2
    crop = resized.crop((left, top, left + crop_size, top + crop_size))
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    return pixels, Geometry(height, width, resized_h, resized_w, top, left, crop_size)
