"""RISE (Petsiuk, Das, Saenko, BMVC 2018)."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from explain.core.methods.base import Method, Param, batch_size_param, cpu_channels_last
from explain.core.ops import as_plane, chunks
from explain.core.registry import register_method


def rise_grids(count: int, cells: int, p: float, size: int | tuple[int, int], generator: torch.Generator | None):
    """The random part of RISE: ``count×cells×cells`` binary grids and per-mask shifts ``count×2``.

    ``size`` is the input's ``(H, W)`` (an int for a square); the shift along each axis is drawn
    below that axis's cell size ``⌈H/s⌉``, ``⌈W/s⌉``. Drawn on the CPU from ``generator`` so a
    seed gives the same masks on any device.
    """
    h, w = as_plane(size)
    grids = (torch.rand(count, 1, cells, cells, generator=generator) < p).float()
    cell_h, cell_w = math.ceil(h / cells), math.ceil(w / cells)
    if cell_h == cell_w:
        shifts = torch.randint(0, cell_h, (count, 2), generator=generator)
    else:
        shifts = torch.stack([torch.randint(0, cell_h, (count,), generator=generator),
                              torch.randint(0, cell_w, (count,), generator=generator)], dim=1)
    return grids, shifts


def rise_masks(grids: Tensor, shifts: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Soft masks ``n×H×W``: grids upsampled bilinearly to ``(s+1)·⌈H/s⌉ × (s+1)·⌈W/s⌉``,
    cropped at the shifts."""
    h, w = as_plane(size)
    cells = grids.shape[-1]
    big = ((cells + 1) * math.ceil(h / cells), (cells + 1) * math.ceil(w / cells))
    up = F.interpolate(grids, size=big, mode="bilinear", align_corners=False)[:, 0]   # n×big_h×big_w
    rows = (shifts[:, 0, None] + torch.arange(h, device=grids.device))[:, :, None]     # n×H×1
    cols = (shifts[:, 1, None] + torch.arange(w, device=grids.device))[:, None, :]     # n×1×W
    n = torch.arange(grids.shape[0], device=grids.device)[:, None, None]
    return up[n, rows, cols]


@register_method("rise")
class Rise(Method):
    """RISE: the class probability averaged over random soft masks, weighted by each mask.

    ``N`` binary ``s×s`` grids (each cell kept with probability ``p``) are upsampled bilinearly
    to ``(s+1)·⌈H/s⌉ × (s+1)·⌈W/s⌉`` and cropped at a random shift to soft masks ``M_i``
    (``H×W``); map ``Σ_i softmax(F(I ⊙ M_i))_c · M_i / (N · p)`` (``B×H×W``; the product is taken in the
    model's normalised input space). A black box: works on any model family. The masks come
    from the seeded ``generator`` and are shared by every image of a batch.
    Defaults ``N = 4000``, ``s = 7``, ``p = 0.5``. Petsiuk et al., BMVC 2018.

    Example::

        [e] = explain(classifier, x, "rise", params={"masks": 2000}, seed=1)
    """

    label: ClassVar[str] = "RISE"
    families: ClassVar[frozenset[str]] = frozenset({"cnn", "vit"})
    group = "perturbation"
    folds_batch_norms: ClassVar[bool] = True
    params: ClassVar[tuple[Param, ...]] = (
        Param("masks", "int", 4000, minimum=1, maximum=100000, help="Number N of random masks."),
        Param("cells", "int", 7, minimum=1, maximum=64, help="Grid size s (s×s cells per mask)."),
        Param("p", "float", 0.5, minimum=0.01, maximum=1.0, help="Probability that a cell is kept."),
        batch_size_param(what="masked images"),
    )

    def attribute(self, classifier, inputs, targets, params, generator=None) -> Tensor:
        b = inputs.shape[0]
        size = tuple(inputs.shape[-2:])
        n = params["masks"]
        grids, shifts = rise_grids(n, params["cells"], params["p"], size, generator)
        grids, shifts = grids.to(inputs.device), shifts.to(inputs.device)
        targets = targets.to(inputs.device).view(-1, 1)
        sal = torch.zeros(b, *size, device=inputs.device)
        # Each model batch holds `per` masks for all B images.
        per = max(1, params["batch_size"] // b)
        with torch.no_grad():
            for sl in chunks(n, per):
                masks = rise_masks(grids[sl], shifts[sl], size)                     # m×H×W
                x = (inputs[:, None] * masks[None, :, None].to(inputs.dtype)).flatten(0, 1)
                probs = torch.softmax(classifier.module(cpu_channels_last(x)).float(), dim=1)
                probs = probs.view(b, masks.shape[0], probs.shape[-1])                    # B×m×C
                scores = probs.gather(2, targets[:, :, None].expand(-1, masks.shape[0], 1))[..., 0]  # B×m
                sal += torch.einsum("bm,mhw->bhw", scores, masks)
        return sal / (n * params["p"])
