"""The sliding-window enhancement: sharper maps from any method by re-explaining zoomed windows.

Wraps any registered method ``f(F, I, c) → S×S``:

1. ``S_0 = f(F, I, c)`` at full size.
2. Windows ``h×w`` (default 96) slid with ``stride`` (32) from the top-left corner, only
   positions fully inside the image (5×5 = 25 on 224×224); ``P_k = up(crop_k(I), S×S)``
   (on an ``H×W`` input ``S = min(H, W)``: a window is zoomed without changing its shape).
3. ``S_k = f(F, P_k, c)``; ``α_k = softmax(F(P_k))_c``.
4. ``s_k``: ``S_k`` resized down to ``h×w`` (bilinear, antialiased);
   ``S' = Σ_k place_k(α_k · s_k + crop_k(S_0))``.
5. Ideal low-pass: ``FFT(S')``, zero frequency shifted to the centre, every frequency farther
   than ``D_0`` (35) from it set to 0, inverse transform, real part.
6. ``S = norm(smoothed)``.

An image's windows go through the wrapped method in one call (``window_batch`` at a time; the
method's own ``batch_size`` chunks them further) when the method is batchable, one window at a
time otherwise::

    enhanced = SlidingWindowEnhancement(get_method("gradcam"))
    maps, logits, targets = enhanced.explain_batch(classifier, x, None, params, generator)
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from explain.core.methods.base import Method, Param
from explain.core.ops import chunks, norm, upsample

ENHANCE_PARAMS: tuple[Param, ...] = (
    Param("window", "int", 96, minimum=8, maximum=4096, help="Window height and width h = w in pixels."),
    Param("stride", "int", 32, minimum=1, maximum=4096, help="Window step in pixels."),
    Param("radius", "float", 35.0, minimum=0.0, maximum=10000.0, help="Ideal low-pass radius D0 (frequency units)."),
    Param("window_batch", "int", 25, minimum=1, maximum=10000,
          help="Windows of one image handed to the wrapped method per call (memory vs speed)."),
)


def resolve_enhance_params(enhance: bool | Mapping[str, Any] | None) -> dict | None:
    """``None``/``False`` → ``None``; ``True`` → the defaults; a dict → validated, defaults filled."""
    if enhance is None or enhance is False:
        return None
    overrides = {} if enhance is True else dict(enhance)
    known = {p.name for p in ENHANCE_PARAMS}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"enhancement has no parameter(s) {unknown}; accepted: {sorted(known)}")
    return {p.name: p.validate(overrides.get(p.name, p.default)) for p in ENHANCE_PARAMS}


def window_positions(height: int, width: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the windows fully inside the image, row by row."""
    if window > height or window > width:
        raise ValueError(f"window {window} does not fit in a {height}×{width} input; choose a smaller window")
    ys = range(0, height - window + 1, stride)
    xs = range(0, width - window + 1, stride)
    return [(y, x) for y in ys for x in xs]


def zoomed_size(height: int, width: int) -> int:
    """Side of the square a window is zoomed to: the input's shorter side (``S`` for ``S×S``),
    so a square window keeps its aspect ratio on a non-square input."""
    return min(height, width)


def crop_windows(inputs: Tensor, positions: list[tuple[int, int]], window: int) -> Tensor:
    """``B×C×H×W`` → ``(B·K)×C×s×s``: each window cropped and upsampled bilinearly to ``s×s``,
    ``s = min(H, W)``.

    Image-major order: the ``K`` windows of image 0, then those of image 1, …
    """
    side = zoomed_size(*inputs.shape[-2:])
    crops = torch.stack([inputs[..., y:y + window, x:x + window] for y, x in positions], dim=1)
    crops = crops.flatten(0, 1)
    return F.interpolate(crops, size=(side, side), mode="bilinear", align_corners=False)


def fuse(base: Tensor, window_maps: Tensor, alphas: Tensor, positions: list[tuple[int, int]], window: int) -> Tensor:
    """``S' = Σ_k place_k(α_k · s_k + crop_k(S_0))``.

    Args:
        base: ``S_0``, ``B×H×W``.
        window_maps: ``s_k`` already at window size, ``B×K×h×w``.
        alphas: ``α_k``, ``B×K``.
    """
    out = torch.zeros_like(base)
    for k, (y, x) in enumerate(positions):
        out[:, y:y + window, x:x + window] += (
            alphas[:, k, None, None] * window_maps[:, k] + base[:, y:y + window, x:x + window]
        )
    return out


def ideal_lowpass(maps: Tensor, radius: float) -> Tensor:
    """Keep the frequencies within ``radius`` of the (shifted) zero frequency of each ``…×H×W`` map."""
    h, w = maps.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(maps.double()), dim=(-2, -1))
    cy, cx = h // 2, w // 2    # where fftshift puts the zero frequency
    yy = torch.arange(h, device=maps.device, dtype=torch.float64)[:, None] - cy
    xx = torch.arange(w, device=maps.device, dtype=torch.float64)[None, :] - cx
    keep = (yy ** 2 + xx ** 2) <= radius ** 2
    spectrum = spectrum * keep
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real.to(maps.dtype)


def finish_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Raw method output → ``B×H×W`` float32, bilinear to ``size``, finite and non-negative."""
    if maps.dim() != 3:
        raise ValueError(f"a method must return B×h×w maps, got shape {tuple(maps.shape)}")
    maps = upsample(maps.float(), size)
    return torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)


class SlidingWindowEnhancement:
    """Wraps a :class:`Method`; ``explain_batch`` returns enhanced maps in ``[0, 1]``, ``B×H×W``."""

    def __init__(self, method: Method, **params: Any):
        self.method = method
        self.params = resolve_enhance_params(params or True)

    def explain_batch(self, classifier, inputs, targets, params, generator):
        p = self.params
        size = tuple(inputs.shape[-2:])
        window, stride = p["window"], p["stride"]
        positions = window_positions(size[0], size[1], window, stride)
        k = len(positions)
        b = inputs.shape[0]

        maps, logits, targets = self.method.explain_batch(classifier, inputs, targets, params, generator)
        base = finish_maps(maps, size)

        windows = crop_windows(inputs, positions, window)                  # (B·K)×3×s×s
        window_targets = targets.repeat_interleave(k)
        per_call = p["window_batch"] if self.method.batchable else 1
        state = generator.get_state() if generator is not None else None
        window_maps, window_logits = [], []
        for image in range(b):
            # Every image's windows start from the same random state, so a random method
            # (RISE) gives each image the maps it gets when explained alone.
            if state is not None:
                generator.set_state(state)
            for sl in chunks(k, per_call):
                sl = slice(image * k + sl.start, image * k + sl.stop)
                m, lg, _ = self.method.explain_batch(
                    classifier, windows[sl], window_targets[sl], params, generator
                )
                side = windows.shape[-1]
                window_maps.append(F.interpolate(
                    finish_maps(m, (side, side))[:, None], size=(window, window), mode="bilinear",
                    align_corners=False, antialias=True,
                )[:, 0])
                window_logits.append(lg.float())
        small = torch.cat(window_maps).view(b, k, window, window)
        probs = torch.softmax(torch.cat(window_logits), dim=1)
        alphas = probs.gather(1, window_targets.view(-1, 1)).view(b, k)
        fused = fuse(base, small, alphas, positions, window)
        smoothed = ideal_lowpass(fused, p["radius"])
        return norm(smoothed), logits, targets


def passes_per_image(size: int, window: int = 96, stride: int = 32) -> int:
    """How many times the wrapped method runs per image (1 + number of windows)."""
    return 1 + len(window_positions(size, size, window, stride))


