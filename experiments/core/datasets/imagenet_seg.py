"""ImageNet-Segmentation (Guillaumin, Küttel and Ferrari, IJCV 2014): ``gtsegs_ijcv.mat``.

The file is a MATLAB v7.3 MAT-file, i.e. HDF5 (read with h5py). Layout:

* ``/value/img``: an ``N×1`` array of object references; each points to a ``uint8`` array
  stored as MATLAB writes it, column-major, so h5py sees ``3×W×H`` (or ``W×H`` for a grey
  image); transposing the axes gives ``H×W×3``;
* ``/value/gt``: an ``N×1`` array of references to MATLAB cells; element ``[0, 0]`` of each
  cell is a reference to the ``W×H`` mask (1 = object), transposed likewise.

The 4 276 images carry no class label here (the protocol explains the predicted class).
The protocol's 224×224 resize (masks nearest-neighbour) is applied by the metric code
(:func:`experiments.core.imageops.preprocess_mask`), not here.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .base import Dataset, DatasetFormatError, Sample, check_path, open_checked, roots_of

__all__ = ["read_imagenet_segmentation"]


@contextlib.contextmanager
def _open(path: Path, roots: tuple[str, ...]):
    """The MAT-file opened through the checked opener: each image and mask read re-checks that
    the file really lies in the data roots (a link swapped after submission is refused)."""
    import h5py

    with open_checked(path, roots) as file:
        try:
            handle = h5py.File(file, "r")
        except OSError:
            raise DatasetFormatError(f"{path.name} is not an HDF5 (MATLAB v7.3) file") from None
        with handle:
            yield handle


def _image(path: Path, roots: tuple[str, ...], index: int) -> Image.Image:
    with _open(path, roots) as f:
        array = np.asarray(f[f["value/img"][index, 0]])
    if array.ndim == 2:
        array = np.repeat(array.T[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(2, 1, 0)
        if array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
    else:
        raise DatasetFormatError(f"{path.name}: image {index} has shape {array.shape}, expected 3×W×H")
    return Image.fromarray(array.astype(np.uint8), "RGB")


def _mask(path: Path, roots: tuple[str, ...], index: int) -> np.ndarray:
    with _open(path, roots) as f:
        cell = f[f["value/gt"][index, 0]]
        array = np.asarray(f[cell[0, 0]])
    if array.ndim != 2:
        raise DatasetFormatError(f"{path.name}: mask {index} has shape {array.shape}, expected W×H")
    return array.T > 0


def read_imagenet_segmentation(path: str | os.PathLike, *, allowed_roots: Iterable[str | os.PathLike]) -> Dataset:
    """Read ``gtsegs_ijcv.mat``; images and masks are decoded on demand (one file open each)."""
    roots = roots_of(allowed_roots)
    mat = check_path(path, roots, what="gtsegs_ijcv.mat")
    if not mat.is_file():
        raise DatasetFormatError(f"{mat} does not exist (expected gtsegs_ijcv.mat)")
    with _open(mat, roots) as f:
        try:
            images, masks = f["value/img"], f["value/gt"]
        except KeyError:
            raise DatasetFormatError(f"{mat} has no /value/img and /value/gt; is it gtsegs_ijcv.mat?") from None
        count = images.shape[0]
        if masks.shape[0] != count:
            raise DatasetFormatError(f"{mat}: {count} images but {masks.shape[0]} masks")
    samples = tuple(
        Sample(
            key=f"{i:05d}",
            labels=(),
            loader=(lambda i=i: _image(mat, roots, i)),
            foreground_loader=(lambda i=i: _mask(mat, roots, i)),
        )
        for i in range(count)
    )
    if not samples:
        raise DatasetFormatError(f"{mat} holds no image")
    return Dataset(name="imagenet-segmentation", version="gtsegs_ijcv", root=str(mat), class_names=(), samples=samples)
