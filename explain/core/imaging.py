"""Reading images and mapping between the original photo and the model's input.

The standard ImageNet preprocessing resizes the shorter side to ``resize_size`` and cuts the
centre ``input_size × input_size``. ``Geometry`` remembers that so a map computed on the
model input can be laid back onto the original pixels (areas the crop cut away are 0).

``region="whole"`` keeps the whole image instead: the shorter side becomes ``input_size`` and
the longer side follows at the same factor, nothing is cut (a CNN takes any ``H×W``; a ViT's
position embedding fixes its square grid, so it keeps the crop).
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


#: What a map can cover: the model's centre crop, or the whole image resized without a crop.
REGIONS = ("crop", "whole")

#: A whole-image input may be at most this elongated (longer / shorter side); beyond it the
#: input grows past what an interactive map should cost, and the crop is the better choice.
MAX_WHOLE_ASPECT = 4.0


@dataclass(frozen=True)
class Geometry:
    """Where the model input sits in the original image.

    The original ``height × width`` image was resized to ``resized_h × resized_w`` and the
    crop ``[top:top+size, left:left+size_w]`` of that is the model input (``size_w`` is
    ``size`` for the square centre crop; for ``region="whole"`` the crop is all of it).
    """

    height: int
    width: int
    resized_h: int
    resized_w: int
    top: int
    left: int
    size: int
    size_w: int | None = None
    region: str = "crop"

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.size, self.size if self.size_w is None else self.size_w

    def box(self) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)`` of the model input in original pixels."""
        h, w = self.input_hw
        sx, sy = self.width / self.resized_w, self.height / self.resized_h
        return (self.left * sx, self.top * sy, (self.left + w) * sx, (self.top + h) * sy)

    def to_original(self, saliency: np.ndarray | torch.Tensor) -> np.ndarray:
        """An input-sized map → ``height × width`` float32 aligned with the original pixels.

        The map is first placed on the resized canvas (zeros outside the crop), then resized
        bilinearly to the original size.
        """
        saliency = torch.as_tensor(np.asarray(saliency, dtype=np.float32))
        h, w = self.input_hw
        if tuple(saliency.shape) != (h, w):
            raise ValueError(f"expected a {h}×{w} map, got {tuple(saliency.shape)}")
        canvas = torch.zeros(self.resized_h, self.resized_w)
        canvas[self.top:self.top + h, self.left:self.left + w] = saliency
        out = F.interpolate(canvas[None, None], size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out[0, 0].numpy().astype(np.float32)


def whole_image_refusal(family: str, width: int, height: int, input_size: int) -> str | None:
    """Why the whole ``width × height`` image cannot be a model input (``None``: it can)."""
    if family == "vit":
        return (f"a ViT takes square {input_size}×{input_size} inputs only (its position embeddings fix "
                "the patch grid), so its maps cover the centre crop")
    aspect = max(width, height) / max(1, min(width, height))
    if aspect > MAX_WHOLE_ASPECT:
        return (f"the image is {width}×{height} ({aspect:.1f}:1); the whole image can be explained up to "
                f"{MAX_WHOLE_ASPECT:g}:1, so use the centre crop")
    return None


def geometry_for(width: int, height: int, resize_size: int, crop_size: int, region: str = "crop") -> Geometry:
    """The geometry :func:`to_pixels` uses for a ``width × height`` image (no pixels needed)."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, not {region!r}")
    if region == "whole":
        scale = crop_size / min(width, height)
        resized_w, resized_h = max(crop_size, round(width * scale)), max(crop_size, round(height * scale))
        return Geometry(height, width, resized_h, resized_w, 0, 0, resized_h, resized_w, "whole")
    scale = resize_size / min(width, height)
    resized_w, resized_h = max(crop_size, round(width * scale)), max(crop_size, round(height * scale))
    top, left = (resized_h - crop_size) // 2, (resized_w - crop_size) // 2
    return Geometry(height, width, resized_h, resized_w, top, left, crop_size)


def preprocess(image: Image.Image, classifier: Classifier, *, region: str = "crop") -> tuple[torch.Tensor, Geometry]:
    """Resize the shorter side to ``resize_size``, centre-crop ``input_size``, normalise
    (``region="whole"``: shorter side to ``input_size``, no crop; CNNs only).

    Returns the ``3×H×W`` input (on the CPU) and the ``Geometry`` to map results back.
    """
    if region == "whole":
        reason = whole_image_refusal(classifier.family, *image.size, classifier.input_size)
        if reason:
            raise ValueError(f"{classifier.name} cannot explain the whole image: {reason}")
    pixels, geometry = to_pixels(image, classifier.resize_size, classifier.input_size, region=region)
    return classifier.normalize(pixels[None])[0], geometry


def to_pixels(image: Image.Image, resize_size: int, crop_size: int, *, region: str = "crop"
              ) -> tuple[torch.Tensor, Geometry]:
    """The ``3×H×W`` tensor in [0, 1] (``crop×crop`` unless ``region="whole"``) and its geometry
    (no normalisation)."""
    image = image.convert("RGB")
    geometry = geometry_for(*image.size, resize_size, crop_size, region)
    h, w = geometry.input_hw
    resized = image.resize((geometry.resized_w, geometry.resized_h), Image.BILINEAR)
    crop = resized.crop((geometry.left, geometry.top, geometry.left + w, geometry.top + h))
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    return pixels, geometry
