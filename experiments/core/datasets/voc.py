"""PASCAL VOC 2007 test (4 952 images, 20 classes) from the devkit layout.

``VOC2007/ImageSets/Main/test.txt`` lists the image ids; ``Annotations/<id>.xml`` gives the
size and the objects (``name``, ``difficult``, ``bndbox`` with 1-based inclusive
``xmin ymin xmax ymax``); ``JPEGImages/<id>.jpg`` the image. The path may be the
``VOC2007`` folder or the ``VOCdevkit`` folder above it.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable

from .base import Dataset, DatasetFormatError, ObjectAnnotation, Sample, check_path

__all__ = ["VOC_CLASSES", "read_voc2007"]

#: The 20 VOC classes in the standard (alphabetical) order multi-label classifiers use.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise DatasetFormatError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _parse(path: Path) -> tuple[tuple[int, int], tuple[ObjectAnnotation, ...]]:
    if not path.is_file():
        raise DatasetFormatError(f"annotation {path} is missing; the image set lists an id without its XML")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise DatasetFormatError(f"{path} is not valid XML ({error})") from None
    size = root.find("size")
    if size is None:
        raise DatasetFormatError(f"{path}: missing <size>")
    width, height = int(_text(size, "width", str(path))), int(_text(size, "height", str(path)))
    objects = []
    for obj in root.findall("object"):
        name = _text(obj, "name", str(path))
        if name not in _INDEX:
            raise DatasetFormatError(f"{path}: {name!r} is not a VOC class")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetFormatError(f"{path}: object {name!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (float(_text(box, t, str(path))) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult_node = obj.find("difficult")
        difficult = difficult_node is not None and (difficult_node.text or "0").strip() == "1"
        # 1-based inclusive → 0-based half-open: pixels xmin-1 … xmax-1.
        objects.append(ObjectAnnotation(_INDEX[name], (xmin - 1, ymin - 1, xmax, ymax), difficult))
    return (width, height), tuple(objects)


def read_voc2007(
    root: str | os.PathLike, *, allowed_roots: Iterable[str | os.PathLike], image_set: str = "test"
) -> Dataset:
    """Read one image set (default ``test``) of VOC 2007; image-level labels are the classes present."""
    base = check_path(root, allowed_roots, what="VOC folder")
    if (base / "VOC2007").is_dir():
        base = base / "VOC2007"
    listing = base / "ImageSets" / "Main" / f"{image_set}.txt"
    if not listing.is_file():
        raise DatasetFormatError(f"{base} is not a VOC2007 folder: {listing.relative_to(base)} is missing")
    ids = [line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    samples = []
    for image_id in ids:
        size, objects = _parse(base / "Annotations" / f"{image_id}.xml")
        samples.append(
            Sample(
                key=image_id,
                labels=tuple(sorted({o.label for o in objects})),
                size=size,
                objects=objects,
                path=str(base / "JPEGImages" / f"{image_id}.jpg"),
            )
        )
    if not samples:
        raise DatasetFormatError(f"{listing} lists no images")
    return Dataset(name="voc2007-" + image_set, version="VOC2007", root=str(base), class_names=VOC_CLASSES, samples=tuple(samples))
