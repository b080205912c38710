"""Small image operations the metrics share: protocol preprocessing, blur, normalisation.

Pixels are ``float32`` in ``[0, 1]`` laid out ``3×H×W`` (or ``B×3×H×W``); the model's
normalised space is ``(pixels − mean) / std`` per channel.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .protocols import Preprocessing

__all__ = ["input_geometry", "preprocess_pixels", "preprocess_mask", "gaussian_blur", "normalize", "as_map"]


def _resized_box(width: int, height: int, prep: Preprocessing) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The resized size ``(w, h)`` and the crop box ``(left, top, right, bottom)``."""
    if prep.resize == "square":
        return (prep.size, prep.size), (0, 0, prep.size, prep.size)
    if prep.resize == "keep-aspect":
        if width <= height:
            w, h = prep.size, int(prep.size * height / width)
        else:
            w, h = int(prep.size * width / height), prep.size
        return (w, h), (0, 0, w, h)
    scale = prep.resize_to / min(width, height)
    w, h = max(prep.size, round(width * scale)), max(prep.size, round(height * scale))
    left, top = (w - prep.size) // 2, (h - prep.size) // 2
    return (w, h), (left, top, left + prep.size, top + prep.size)


def input_geometry(width: int, height: int, prep: Preprocessing) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Where a ``width × height`` image lands in the model input: the resized size ``(w, h)`` and
    the crop box ``(left, top, right, bottom)`` in resized pixels (an original point ``(x, y)`` is
    at ``(x · w / width − left, y · h / height − top)``)."""
    return _resized_box(width, height, prep)


def preprocess_pixels(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """A PIL image → ``3×H×W`` float32 pixels in ``[0, 1]`` as the protocol prescribes
    (``S×S`` except for ``"keep-aspect"``)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"preprocess_pixels needs a PIL image, got {type(image).__name__}")
    image = image.convert("RGB")
    size, box = _resized_box(*image.size, prep)
    image = image.resize(size, Image.BILINEAR).crop(box)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def preprocess_mask(mask: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """A boolean ``H×W`` mask → boolean at the model input's size, resized nearest-neighbour
    with the same geometry as :func:`preprocess_pixels`."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be H×W, got shape {mask.shape}")
    height, width = mask.shape
    size, box = _resized_box(width, height, prep)
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST).crop(box)
    return np.asarray(image) > 127


def _gaussian_kernel(kernel: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    half = (kernel - 1) / 2
    x = torch.linspace(-half, half, kernel, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def gaussian_blur(pixels: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``B×C×H×W`` (or ``C×H×W``) with reflect padding.

    The 1-D kernel is ``exp(−x²/2σ²)`` sampled at ``x = −(k−1)/2 … (k−1)/2`` and normalised to
    sum 1 (the same convention as ``torchvision.transforms.functional.gaussian_blur``).
    Reflect padding needs ``kernel // 2 < min(H, W)``.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"blur kernel size must be odd and positive, not {kernel}")
    squeeze = pixels.dim() == 3
    x = pixels[None] if squeeze else pixels
    if x.dim() != 4:
        raise ValueError(f"gaussian_blur needs C×H×W or B×C×H×W, got shape {tuple(pixels.shape)}")
    pad = kernel // 2
    if pad >= min(x.shape[-2:]):
        raise ValueError(f"blur kernel {kernel} is too large for a {x.shape[-2]}×{x.shape[-1]} image")
    channels = x.shape[1]
    w = _gaussian_kernel(kernel, sigma, x.dtype, x.device)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, w.view(1, 1, 1, kernel).expand(channels, 1, 1, kernel), groups=channels)
    x = F.conv2d(x, w.view(1, 1, kernel, 1).expand(channels, 1, kernel, 1), groups=channels)
    return x[0] if squeeze else x


def normalize(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(pixels − mean) / std`` per channel; ``pixels`` is ``C×H×W`` or ``B×C×H×W``."""
    shape = (-1, 1, 1) if pixels.dim() == 3 else (1, -1, 1, 1)
    m = torch.as_tensor(mean, dtype=pixels.dtype, device=pixels.device).view(shape)
    s = torch.as_tensor(std, dtype=pixels.dtype, device=pixels.device).view(shape)
    return (pixels - m) / s


def as_map(saliency: np.ndarray | torch.Tensor, name: str = "saliency") -> torch.Tensor:
    """A finite 2-D float32 CPU tensor from an ``H×W`` (or ``1×H×W``) array."""
    t = torch.as_tensor(np.asarray(saliency.detach().cpu() if isinstance(saliency, torch.Tensor) else saliency), dtype=torch.float32)
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2:
        raise ValueError(f"{name} map must be H×W, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} map contains NaN or infinite values; fix the method output before evaluating it")
    return t


def image_and_map(pixels: torch.Tensor, saliency: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Check a ``3×H×W`` image in [0, 1] and its ``H×W`` map; return the map as a tensor."""
    if pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(f"pixels must be 3×H×W in [0, 1], got shape {tuple(pixels.shape)}")
    sal = as_map(saliency)
    height, width = pixels.shape[1:]
    if tuple(sal.shape) != (height, width):
        raise ValueError(f"saliency map is {tuple(sal.shape)} but the image is {height}×{width}; resize the map first")
    return sal
