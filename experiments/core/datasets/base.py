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
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "PathNotAllowed", "DatasetFormatError", "check_path", "check_file", "roots_of", "open_checked", "check_name",
    "ObjectAnnotation", "Sample", "Dataset", "box_mask",
]

#: What an option naming a file of a data set (an image set, a split) may look like: a name, not a path.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class PathNotAllowed(ValueError):
    """A data-set path lies outside the configured data roots."""


class DatasetFormatError(ValueError):
    """The files at a path are not in the data set's standard layout."""


def check_path(path: str | os.PathLike, allowed_roots: Iterable[str | os.PathLike] | None, *, what: str = "path") -> Path:
    """``path`` resolved (symlinks followed), if it lies inside one of ``allowed_roots``.

    Raises :class:`PathNotAllowed` otherwise, and ``TypeError`` when ``allowed_roots`` is
    ``None`` (pass the configured roots, e.g. ``settings.DATA_ROOTS``, or ``[folder]``).
    """
    roots = _roots(allowed_roots)
    resolved = Path(path).expanduser().resolve()
    if not _inside(resolved, roots):
        shown = ", ".join(str(r) for r in roots) or "(none configured)"
        raise PathNotAllowed(
            f"{what} {resolved} is outside the configured data roots ({shown}); "
            "move the data set under one of them or add its folder to DATA_ROOTS"
        )
    return resolved


def _roots(allowed_roots: Iterable[str | os.PathLike] | str | os.PathLike | None) -> list[Path]:
    if allowed_roots is None:
        raise TypeError("allowed_roots is required: pass the data roots (e.g. settings.DATA_ROOTS) the path must lie in")
    if isinstance(allowed_roots, (str, os.PathLike)):
        allowed_roots = [allowed_roots]
    return [Path(r).expanduser().resolve() for r in allowed_roots]


def roots_of(allowed_roots: Iterable[str | os.PathLike] | str | os.PathLike | None) -> tuple[str, ...]:
    """The data roots as a tuple of resolved paths (what a :class:`Sample` keeps to check at open time)."""
    return tuple(str(r) for r in _roots(allowed_roots))


def _inside(resolved: Path, roots: Sequence[Path]) -> bool:
    return any(resolved == root or root in resolved.parents for root in roots)


def _shown(path: Path, base: str | os.PathLike | None) -> str:
    """``path`` relative to ``base`` where it lies below it (messages name files by their place in the data set)."""
    if base is not None:
        try:
            return str(Path(path).relative_to(base))
        except ValueError:
            pass
    return Path(path).name


def check_file(
    path: str | os.PathLike, allowed_roots: Iterable[str | os.PathLike] | None, *, base: str | os.PathLike | None = None
) -> Path:
    """The real path of a file a reader will open (every symbolic link on the way followed), if
    it lies inside ``allowed_roots``; :class:`PathNotAllowed` otherwise.

    Unlike :func:`check_path` (for the paths a person typed), the message names the file by its
    place in the data set (relative to ``base``) and never says where a link points.
    """
    roots = _roots(allowed_roots)
    resolved = Path(os.path.realpath(path))
    if not _inside(resolved, roots):
        raise PathNotAllowed(
            f"{_shown(Path(path), base)} links outside the configured data roots; copy the file into the data set "
            "instead of linking to it, or add its folder to DATA_ROOTS"
        )
    return resolved


def open_checked(
    path: str | os.PathLike, allowed_roots: Iterable[str | os.PathLike] | None, *, base: str | os.PathLike | None = None
):
    """Open ``path`` for binary reading and check the file *actually opened* lies inside the roots.

    The check reads the opened descriptor's path (``/proc/self/fd``), so a link swapped after
    the data set was listed, or between a check and the open, cannot slip through; where
    ``/proc`` is missing the path is resolved just before opening. Raises
    :class:`PathNotAllowed`, or :class:`DatasetFormatError` for a missing file.
    """
    roots = _roots(allowed_roots)
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise DatasetFormatError(f"{_shown(Path(path), base)} does not exist") from None
    except IsADirectoryError:
        raise DatasetFormatError(f"{_shown(Path(path), base)} is a folder, not a file") from None
    try:
        try:
            opened = Path(os.readlink(f"/proc/self/fd/{file.fileno()}"))
        except OSError:
            opened = Path(os.path.realpath(path))
        if not _inside(opened, roots):
            raise PathNotAllowed(
                f"{_shown(Path(path), base)} links outside the configured data roots; copy the file into the data set "
                "instead of linking to it, or add its folder to DATA_ROOTS"
            )
        return file
    except BaseException:
        file.close()
        raise


def check_name(value: object, *, what: str) -> str:
    """``value`` if it is a plain name (letters, digits, ``_`` and ``-``, at most 64), else ``ValueError``.

    Options that pick a file of a data set (VOC's image set) take a name, never a path.
    """
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(f"{what} must be a name of 1 to 64 letters, digits, '_' or '-' (such as 'test'), not a path")
    return value


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
    ``roots``: the data roots ``path`` must lie in when it is opened (readers set it, so a link
    swapped after listing is refused at open time too); ``base`` the folder messages name
    files relative to.
    """

    key: str
    labels: tuple[int, ...]
    size: tuple[int, int] | None = None
    objects: tuple[ObjectAnnotation, ...] = ()
    path: str | None = None
    loader: Callable[[], Image.Image] | None = field(default=None, compare=False, repr=False)
    foreground_loader: Callable[[], np.ndarray] | None = field(default=None, compare=False, repr=False)
    roots: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    base: str | None = field(default=None, compare=False, repr=False)

    def _open(self):
        if self.roots is None:
            return open(self.path, "rb")
        return open_checked(self.path, self.roots, base=self.base)

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

        with self._open() as file:
            return load_image(file)

    def _image_size(self) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        if self.path is not None:
            with self._open() as file, Image.open(file) as image:
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
