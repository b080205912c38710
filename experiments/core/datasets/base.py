"""The record type every reader returns, subsets, and the data-root guard.

A :class:`Dataset` is an ordered tuple of :class:`Sample` records plus its class names and
provenance (name, version, root, which images). A sample knows how to load its image and
its ground truth lazily, so listing 50 000 images reads no pixels.

Box convention: ``(x0, y0, x1, y1)`` in 0-based pixel coordinates, half-open, so the box
covers ``mask[y0:y1, x0:x1]``. VOC's 1-based inclusive ``(xmin, ymin, xmax, ymax)`` becomes
``(xmin − 1, ymin − 1, xmax, ymax)``; COCO's ``[x, y, w, h]`` becomes ``(x, y, x + w, y + h)``.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = ["PathNotAllowed", "DatasetFormatError", "check_path", "ObjectAnnotation", "Sample", "Dataset", "box_mask"]


class PathNotAllowed(ValueError):
    """A data-set path lies outside the configured data roots."""


class DatasetFormatError(ValueError):
    """The files at a path are not in the data set's standard layout."""


def check_path(path: str | os.PathLike, allowed_roots: Iterable[str | os.PathLike] | None, *, what: str = "path") -> Path:
    """``path`` resolved (symlinks followed), if it lies inside one of ``allowed_roots``.

    Raises :class:`PathNotAllowed` otherwise, and ``TypeError`` when ``allowed_roots`` is
    ``None`` (pass the configured roots, e.g. ``settings.DATA_ROOTS``, or ``[folder]``).
    """
    if allowed_roots is None:
        raise TypeError("allowed_roots is required: pass the data roots (e.g. settings.DATA_ROOTS) the path must lie in")
    if isinstance(allowed_roots, (str, os.PathLike)):
        allowed_roots = [allowed_roots]
    resolved = Path(path).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in allowed_roots]
    if not any(resolved == root or root in resolved.parents for root in roots):
        shown = ", ".join(str(r) for r in roots) or "(none configured)"
        raise PathNotAllowed(
            f"{what} {resolved} is outside the configured data roots ({shown}); "
            "move the data set under one of them or add its folder to DATA_ROOTS"
        )
    return resolved


def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Boolean ``height × width`` mask of a half-open box ``(x0, y0, x1, y1)``, clipped to the image."""
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), dtype=bool)
    c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    c1, r1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    if c1 > c0 and r1 > r0:
        mask[r0:r1, c0:c1] = True
    return mask


@dataclass(frozen=True)
class ObjectAnnotation:
    """One annotated object: its class index, box, "difficult" flag and optional lazy mask."""

    label: int
    box: tuple[float, float, float, float] | None = None
    difficult: bool = False
    mask_loader: Callable[[], np.ndarray] | None = field(default=None, compare=False, repr=False)

    def mask(self, height: int, width: int) -> np.ndarray:
        """The object's pixels: its instance mask where one exists, else its box."""
        if self.mask_loader is not None:
            mask = np.asarray(self.mask_loader(), dtype=bool)
            if mask.shape != (height, width):
                raise DatasetFormatError(f"an object mask is {mask.shape}, its image {(height, width)}")
            return mask
        if self.box is None:
            raise DatasetFormatError("this object has neither a mask nor a box")
        return box_mask(self.box, height, width)


@dataclass(frozen=True)
class Sample:
    """One image with its ground truth.

    ``key``: stable identifier within the data set (file stem or index), used in records.
    ``size``: ``(width, height)`` of the original image, ``None`` until known (ILSVRC).
    ``labels``: the class indices present (image-level). ``objects``: boxes/masks.
    ``foreground_loader``: a whole-image foreground mask (ImageNet-Segmentation).
    """

    key: str
    labels: tuple[int, ...]
    size: tuple[int, int] | None = None
    objects: tuple[ObjectAnnotation, ...] = ()
    path: str | None = None
    loader: Callable[[], Image.Image] | None = field(default=None, compare=False, repr=False)
    foreground_loader: Callable[[], np.ndarray] | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> int | None:
        """The image-level label of a single-label data set (the first label), or ``None``."""
        return self.labels[0] if self.labels else None

    def load_image(self) -> Image.Image:
        """The original image as RGB."""
        if self.loader is not None:
            return self.loader().convert("RGB")
        if self.path is None:
            raise DatasetFormatError(f"sample {self.key} has neither a path nor a loader")
        from explain.core.imaging import load_image

        return load_image(self.path)

    def _image_size(self) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        if self.path is not None:
            with Image.open(self.path) as image:
                return image.size
        return self.load_image().size

    def class_mask(self, class_id: int) -> np.ndarray:
        """Union of the masks (or boxes) of every object of ``class_id``, ``H×W`` boolean."""
        width, height = self._image_size()
        mask = np.zeros((height, width), dtype=bool)
        for obj in self.objects:
            if obj.label == class_id:
                mask |= obj.mask(height, width)
        return mask

    def foreground_mask(self) -> np.ndarray:
        """The foreground mask: the data set's own where it has one, else the union of all objects."""
        if self.foreground_loader is not None:
            return np.asarray(self.foreground_loader(), dtype=bool)
        if not self.objects:
            raise DatasetFormatError(f"sample {self.key} has no segmentation ground truth")
        width, height = self._image_size()
        mask = np.zeros((height, width), dtype=bool)
        for obj in self.objects:
            mask |= obj.mask(height, width)
        return mask


@dataclass(frozen=True)
class Dataset:
    """An ordered, immutable list of samples with provenance.

    ``name`` identifies the data set (``"ilsvrc2012-val"``), ``version`` its annotation
    source, ``selection`` which images were taken (``"all"``, ``"first 100"``,
    ``"random 100 (seed 0)"``).
    """

    name: str
    version: str
    root: str
    class_names: tuple[str, ...]
    samples: tuple[Sample, ...]
    selection: str = "all"
    #: Extra facts a reader knows (e.g. the WordNet IDs of ILSVRC classes).
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, *, first: int | None = None, random: int | None = None, seed: int = 0) -> "Dataset":
        """The first ``first`` samples, or ``random`` samples drawn without replacement with ``seed``.

        Random subsets keep the data set's order, so the same (n, seed) always gives the same
        images in the same order.
        """
        if (first is None) == (random is None):
            raise ValueError("subset() takes exactly one of first=N or random=N")
        n = first if first is not None else random
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"a subset needs a positive number of images, not {n!r}")
        if n > len(self.samples):
            raise ValueError(f"{self.name} has {len(self.samples)} images; cannot take {n}")
        if first is not None:
            return replace(self, samples=self.samples[:n], selection=_compose(self.selection, f"first {n}"))
        picked = np.sort(np.random.default_rng(seed).choice(len(self.samples), size=n, replace=False))
        return replace(
            self,
            samples=tuple(self.samples[i] for i in picked),
            selection=_compose(self.selection, f"random {n} (seed {seed})"),
        )

    def describe(self) -> dict[str, Any]:
        """Provenance for a result: name, version, root, selection, count and the image keys."""
        return {
            "name": self.name,
            "version": self.version,
            "root": self.root,
            "selection": self.selection,
            "num_images": len(self.samples),
            "num_classes": self.num_classes,
            "keys": [s.key for s in self.samples],
        }


def _compose(previous: str, step: str) -> str:
    return step if previous == "all" else f"{previous}, then {step}"
