"""PASCAL VOC 2007 test (4 952 images, 20 classes) from the devkit layout.

``VOC2007/ImageSets/Main/test.txt`` lists the image ids; ``Annotations/<id>.xml`` gives the
size and the objects (``name``, ``difficult``, ``bndbox`` with 1-based inclusive
``xmin ymin xmax ymax``); ``JPEGImages/<id>.jpg`` the image. The path may be the
``VOC2007`` folder or the ``VOCdevkit`` folder above it.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable

from .base import (
    Dataset,
    DatasetFormatError,
    ObjectAnnotation,
    Sample,
    check_file,
    check_name,
    check_path,
    open_checked,
    roots_of,
)

__all__ = ["VOC_CLASSES", "read_voc2007"]

#: The 20 VOC classes in the standard (alphabetical) order multi-label classifiers use.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}


#: A VOC image id (``000001``, ``2008_000123``): the only thing a line of an image set may name.
_IMAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DatasetFormatError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    try:
        return float(_text(node, tag, where))
    except ValueError:
        raise DatasetFormatError(f"{where}: <{tag}> is not a number") from None


def _parse(path: Path, roots: Iterable[str | os.PathLike], base: Path) -> tuple[tuple[int, int], tuple[ObjectAnnotation, ...]]:
    # Messages name the file relative to the VOC folder and never quote what it holds.
    where = str(path.relative_to(base))
    with open_checked(path, roots, base=base) as file:
        try:
            root = ET.parse(file).getroot()
        except ET.ParseError as error:
            line, column = error.position
            raise DatasetFormatError(f"{where} is not valid XML (line {line}, column {column})") from None
    size = root.find("size")
    if size is None:
        raise DatasetFormatError(f"{where}: missing <size>")
    width, height = int(_number(size, "width", where)), int(_number(size, "height", where))
    objects = []
    for number, obj in enumerate(root.findall("object"), 1):
        name = _text(obj, "name", where)
        if name not in _INDEX:
            raise DatasetFormatError(f"{where}: object {number} is not of one of the 20 VOC classes")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetFormatError(f"{where}: object {number} has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult_node = obj.find("difficult")
        difficult = difficult_node is not None and (difficult_node.text or "0").strip() == "1"
        # 1-based inclusive → 0-based half-open: pixels xmin-1 … xmax-1.
        objects.append(ObjectAnnotation(_INDEX[name], (xmin - 1, ymin - 1, xmax, ymax), difficult))
    return (width, height), tuple(objects)


def read_voc2007(
    root: str | os.PathLike, *, allowed_roots: Iterable[str | os.PathLike], image_set: str = "test"
) -> Dataset:
    """Read one image set (default ``test``) of VOC 2007; image-level labels are the classes present.

    ``image_set`` is a name (``test``, ``trainval``…), never a path. Every file read (the
    image-set list, each annotation, each image) must really lie inside ``allowed_roots``: a
    symbolic link that leads out is refused here and again when the file is opened.
    """
    check_name(image_set, what="image_set")
    roots = roots_of(allowed_roots)
    base = check_path(root, roots, what="VOC folder")
    if (base / "VOC2007").is_dir():
        base = check_path(base / "VOC2007", roots, what="VOC folder")
    listing = base / "ImageSets" / "Main" / f"{image_set}.txt"
    shown = listing.relative_to(base)
    if not listing.is_file():
        raise DatasetFormatError(f"{base} is not a VOC2007 folder: {shown} is missing")
    with open_checked(listing, roots, base=base) as file:
        try:
            lines = file.read().decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise DatasetFormatError(f"{shown} is not a UTF-8 text file") from None
    samples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        image_id = line.split()[0]
        if not _IMAGE_ID.match(image_id):
            raise DatasetFormatError(f"line {number} of {shown} is not a valid VOC image id")
        annotation = base / "Annotations" / f"{image_id}.xml"
        if not annotation.is_file():
            raise DatasetFormatError(f"Annotations/ has no XML for the image on line {number} of {shown}")
        size, objects = _parse(annotation, roots, base)
        image = base / "JPEGImages" / f"{image_id}.jpg"
        check_file(image, roots, base=base)
        samples.append(
            Sample(
                key=image_id,
                labels=tuple(sorted({o.label for o in objects})),
                size=size,
                objects=objects,
                path=str(image),
                roots=roots,
                base=str(base),
            )
        )
    if not samples:
        raise DatasetFormatError(f"{shown} lists no images")
    return Dataset(name="voc2007-" + image_set, version="VOC2007", root=str(base), class_names=VOC_CLASSES, samples=tuple(samples))
