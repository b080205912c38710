"""ILSVRC 2012 validation set (50 000 images, 1000 classes) from its standard on-disk layouts.

Images: ``ILSVRC2012_val_00000001.JPEG`` … in one folder (or in per-WordNet-ID sub-folders,
the layout ``torchvision.datasets.ImageNet`` makes). Labels, one of:

* the devkit (``ILSVRC2012_devkit_t12``): ``data/ILSVRC2012_validation_ground_truth.txt``
  has one ILSVRC2012_ID (1…1000) per image in file-number order, and ``data/meta.mat``'s
  ``synsets`` struct array maps each ID to its WordNet ID (``WNID``) and words; the 1000
  classes are the synsets with ``num_children == 0``;
* Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString`` with
  ``"wnid x_min y_min x_max y_max …"`` per row) plus ``LOC_synset_mapping.txt``
  (``"wnid words"`` per line) or the devkit's ``meta.mat`` for the class list;
* none: the WordNet-ID sub-folder names.

Class index = position of the WordNet ID in the *sorted* list of the 1000 WordNet IDs: the
order torchvision's and timm's ImageNet weights use. With all 1000 classes the class names
are torchvision's (its weights metadata, offline); the WordNet words stay in ``extra``.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import scipy.io

from .base import Dataset, DatasetFormatError, ObjectAnnotation, Sample, check_file, check_path, open_checked, roots_of

logger = logging.getLogger(__name__)

__all__ = ["read_ilsvrc2012_val", "read_meta_mat", "read_synset_mapping"]

_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.(JPEG|jpeg|jpg|JPG|png)$")
_WNID = re.compile(r"^n\d{8}$")


def _open(path: Path, roots: tuple[str, ...] | None):
    return open(path, "rb") if roots is None else open_checked(path, roots, base=path.parent)


def read_meta_mat(path: Path, *, roots: tuple[str, ...] | None = None) -> tuple[dict[int, str], dict[str, str]]:
    """``(ILSVRC2012_ID → WNID, WNID → words)`` for the leaf synsets of the devkit's ``meta.mat``.

    With ``roots``, the file actually opened must lie inside them (:class:`PathNotAllowed`).
    """
    try:
        with _open(path, roots) as file:
            synsets = scipy.io.loadmat(file, squeeze_me=True, struct_as_record=False)["synsets"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, DatasetFormatError):  # PathNotAllowed and a missing file say so themselves
            raise
        raise DatasetFormatError(f"{path.name} is not the devkit's meta.mat with a 'synsets' struct array "
                                 f"({type(error).__name__})") from None
    ids: dict[int, str] = {}
    words: dict[str, str] = {}
    for s in np.atleast_1d(synsets):
        try:
            if int(s.num_children) != 0:
                continue
            ids[int(s.ILSVRC2012_ID)] = str(s.WNID)
            words[str(s.WNID)] = str(s.words)
        except AttributeError as error:
            raise DatasetFormatError(f"{path.name}: a synset lacks a devkit field ({error})") from None
    if not ids:
        raise DatasetFormatError(f"{path.name} lists no leaf synsets (num_children == 0)")
    return ids, words


def _lines(path: Path, roots: tuple[str, ...] | None, encoding: str) -> list[str]:
    with _open(path, roots) as file:
        try:
            return file.read().decode(encoding).splitlines()
        except UnicodeDecodeError:
            raise DatasetFormatError(f"{path.name} is not a {encoding.upper()} text file") from None


def read_synset_mapping(path: Path, *, roots: tuple[str, ...] | None = None) -> dict[str, str]:
    """``WNID → words`` from ``LOC_synset_mapping.txt`` (``"n01440764 tench, Tinca tinca"``).

    Errors name the line, never quote it (the file may not be what it claims).
    """
    words: dict[str, str] = {}
    for number, line in enumerate(_lines(path, roots, "utf-8"), 1):
        line = line.strip()
        if not line:
            continue
        wnid, _, text = line.partition(" ")
        if not _WNID.match(wnid):
            raise DatasetFormatError(f"line {number} of {path.name} is not a valid 'nXXXXXXXX words' synset line")
        words[wnid] = text.strip()
    return words


def _class_list(words: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    wnids = sorted(words)
    return wnids, {w: i for i, w in enumerate(wnids)}


def _val_number(name: str) -> int | None:
    m = _VAL_NAME.match(name)
    return int(m.group(1)) if m else None


def read_ilsvrc2012_val(
    images: str | os.PathLike,
    *,
    allowed_roots: Iterable[str | os.PathLike],
    devkit: str | os.PathLike | None = None,
    solution_csv: str | os.PathLike | None = None,
    synsets: str | os.PathLike | None = None,
) -> Dataset:
    """Read the validation set.

    Args:
        images: the folder of validation images (flat, or WordNet-ID sub-folders).
        allowed_roots: data roots every given path must lie in.
        devkit: the devkit folder (with ``data/meta.mat`` and
            ``data/ILSVRC2012_validation_ground_truth.txt``).
        solution_csv: ``LOC_val_solution.csv`` (boxes and labels) instead of the devkit.
        synsets: ``LOC_synset_mapping.txt`` or ``meta.mat``; with ``solution_csv`` it defaults
            to ``LOC_synset_mapping.txt`` beside the CSV.

    Images missing from the folder are left out (a partial copy works); labels for them are
    ignored. Samples are ordered by file number.
    """
    roots = roots_of(allowed_roots)
    folder = check_path(images, roots, what="image folder")
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder} is not a folder of ILSVRC2012_val_*.JPEG images")
    if devkit is not None and solution_csv is not None:
        raise ValueError("pass either devkit= or solution_csv=, not both")

    files = _find_images(folder, roots)
    objects: dict[int, tuple[ObjectAnnotation, ...]] = {}
    if devkit is not None:
        words, labels, version = _from_devkit(check_path(devkit, roots, what="devkit"), roots)
    elif solution_csv is not None:
        csv_path = check_path(solution_csv, roots, what="solution CSV")
        mapping = synsets if synsets is not None else csv_path.parent / "LOC_synset_mapping.txt"
        words = _words_from(check_path(mapping, roots, what="synset list"), roots)
        labels, objects = _from_solution_csv(csv_path, _class_list(words)[1], roots)
        version = "LOC_val_solution.csv"
    else:
        by_folder = {n: p.parent.name for n, p in files.items() if _WNID.match(p.parent.name)}
        if len(by_folder) != len(files) or not files:
            raise DatasetFormatError(
                f"{folder}: without devkit= or solution_csv= the images must sit in WordNet-ID sub-folders (n01440764/…)"
            )
        if synsets is not None:
            words = _words_from(check_path(synsets, roots, what="synset list"), roots)
        else:
            found = sorted(set(by_folder.values()))
            if len(found) != 1000:
                raise DatasetFormatError(
                    f"{folder} has {len(found)} class folders; with fewer than 1000 the class order is unknown, "
                    "pass synsets= (LOC_synset_mapping.txt or meta.mat)"
                )
            words = {w: w for w in found}
        index = _class_list(words)[1]
        unknown = sorted(set(by_folder.values()) - set(index))
        if unknown:
            raise DatasetFormatError(f"class folders {unknown[:5]} are not in the synset list")
        labels = {n: index[w] for n, w in by_folder.items()}
        version = "class folders"

    wnids, _ = _class_list(words)
    samples = []
    for number in sorted(files):
        if number not in labels:
            continue
        path = files[number]
        samples.append(
            Sample(key=path.stem, labels=(labels[number],), objects=objects.get(number, ()), path=str(path),
                   roots=roots, base=str(folder))
        )
    missing = len(labels) - len(samples)
    if missing > 0:
        logger.info("ILSVRC 2012 val at %s: %d labelled images are not in the folder", folder, missing)
    if not samples:
        raise DatasetFormatError(f"{folder}: no labelled ILSVRC2012_val_*.JPEG image found")
    return Dataset(
        name="ilsvrc2012-val",
        version=version,
        root=str(folder),
        class_names=_class_names(wnids, words),
        samples=tuple(samples),
        extra={"wnids": tuple(wnids), "words": tuple(words[w] for w in wnids)},
    )


def _class_names(wnids: list[str], words: dict[str, str]) -> tuple[str, ...]:
    """torchvision's names (offline, from its weights metadata) for the full 1000 classes, so the
    data set and the ImageNet models agree; the first WordNet synonym otherwise."""
    if len(wnids) == 1000:
        from torchvision.models import ResNet18_Weights

        return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    return tuple(words[w].split(",")[0].strip() for w in wnids)


def _find_images(folder: Path, roots: tuple[str, ...]) -> dict[int, Path]:
    """The validation images by file number; a file or class folder that is a link leading out
    of the data roots is refused (the images are opened through the same check later)."""
    found: dict[int, Path] = {}
    for entry in os.scandir(folder):
        if entry.is_dir() and _WNID.match(entry.name):
            if entry.is_symlink():
                check_file(entry.path, roots, base=folder)
            for sub in os.scandir(entry.path):
                number = _val_number(sub.name)
                if number is not None and sub.is_file():
                    if sub.is_symlink() or entry.is_symlink():
                        check_file(sub.path, roots, base=folder)
                    found[number] = Path(sub.path)
        elif entry.is_file():
            number = _val_number(entry.name)
            if number is not None:
                if entry.is_symlink():
                    check_file(entry.path, roots, base=folder)
                found[number] = Path(entry.path)
    return found


def _words_from(path: Path, roots: tuple[str, ...]) -> dict[str, str]:
    if path.suffix.lower() == ".mat":
        return read_meta_mat(path, roots=roots)[1]
    return read_synset_mapping(path, roots=roots)


def _from_devkit(devkit: Path, allowed_roots) -> tuple[dict[str, str], dict[int, int], str]:
    data = devkit / "data" if (devkit / "data").is_dir() else devkit
    meta = check_file(data / "meta.mat", allowed_roots, base=devkit)
    truth = check_file(data / "ILSVRC2012_validation_ground_truth.txt", allowed_roots, base=devkit)
    for p in (meta, truth):
        if not p.is_file():
            raise DatasetFormatError(f"the devkit at {devkit} has no {p.name} (expected in {data})")
    ids, words = read_meta_mat(meta, roots=allowed_roots)
    index = _class_list(words)[1]
    labels: dict[int, int] = {}
    for number, line in enumerate(_lines(truth, allowed_roots, "ascii"), 1):
        line = line.strip()
        if not line:
            continue
        try:
            labels[number] = index[ids[int(line)]]
        except (ValueError, KeyError):
            raise DatasetFormatError(f"line {number} of {truth.name} is not an ILSVRC2012_ID of meta.mat") from None
    return words, labels, "devkit t12"


def _from_solution_csv(
    path: Path, index: dict[str, int], roots: tuple[str, ...]
) -> tuple[dict[int, int], dict[int, tuple[ObjectAnnotation, ...]]]:
    labels: dict[int, int] = {}
    objects: dict[int, tuple[ObjectAnnotation, ...]] = {}
    with _open(path, roots) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise DatasetFormatError(f"{path.name} needs the columns ImageId,PredictionString (Kaggle's LOC_val_solution.csv)")
        for row_number, row in enumerate(reader, 2):
            number = _val_number((row["ImageId"] or "") + ".JPEG")
            parts = (row["PredictionString"] or "").split()
            if number is None or not parts or len(parts) % 5:
                raise DatasetFormatError(f"line {row_number} of {path.name} is not a valid "
                                         "'ILSVRC2012_val_N,wnid x0 y0 x1 y1 …' row")
            objs = []
            for i in range(0, len(parts), 5):
                wnid = parts[i]
                if wnid not in index:
                    raise DatasetFormatError(f"line {row_number} of {path.name} names a WordNet ID that is not "
                                             "in the synset list")
                try:
                    x0, y0, x1, y1 = (float(v) for v in parts[i + 1:i + 5])
                except ValueError:
                    raise DatasetFormatError(f"line {row_number} of {path.name} has a box coordinate that is "
                                             "not a number") from None
                # ImageNet boxes give the last covered pixel; +1 makes them half-open.
                objs.append(ObjectAnnotation(index[wnid], (x0, y0, x1 + 1, y1 + 1)))
            labels[number] = objs[0].label
            objects[number] = tuple(objs)
    return labels, objects
