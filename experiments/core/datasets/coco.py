"""COCO 2014 val (40 504 images, 80 categories) via pycocotools.

``annotations/instances_val2014.json`` holds images, categories and instance annotations
(polygons or RLE); images are ``val2014/COCO_val2014_<id>.jpg``. Category ids run 1…90 with
gaps; the class index is the position in the sorted list of the 80 ids (the order
multi-label COCO classifiers and TorchRay use). Instance masks are decoded on demand with
``COCO.annToMask``; crowd annotations count as pixels of their class.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Iterable

from .base import Dataset, DatasetFormatError, ObjectAnnotation, Sample, check_file, check_path, open_checked, roots_of

__all__ = ["read_coco2014_val"]


def read_coco2014_val(
    images: str | os.PathLike,
    annotations: str | os.PathLike,
    *,
    allowed_roots: Iterable[str | os.PathLike],
    with_empty: bool = False,
) -> Dataset:
    """Read COCO val from the image folder and ``instances_val2014.json``.

    Images without annotations are left out unless ``with_empty``; samples are ordered by
    image id.
    """
    from pycocotools.coco import COCO

    roots = roots_of(allowed_roots)
    folder = check_path(images, roots, what="image folder")
    ann_path = check_path(annotations, roots, what="annotation file")
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder} is not a folder of COCO images")
    if not ann_path.is_file():
        raise DatasetFormatError(f"{ann_path} is missing (expected instances_val2014.json)")
    # Read the JSON through the checked opener (pycocotools would open the path itself), then
    # index it the way COCO(path) does. Errors give a position, never the file's text.
    with open_checked(ann_path, roots) as file:
        try:
            data = json.load(file)
        except UnicodeDecodeError:
            raise DatasetFormatError(f"{ann_path.name} is not a UTF-8 JSON file") from None
        except json.JSONDecodeError as error:
            raise DatasetFormatError(f"{ann_path.name} is not JSON (line {error.lineno}, column {error.colno})") from None
    if not isinstance(data, dict) or "categories" not in data or "images" not in data:
        raise DatasetFormatError(f"{ann_path.name} lacks 'images' or 'categories'; use instances_val2014.json")
    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        cat_ids = sorted(coco.getCatIds())
        names = tuple(coco.loadCats(cat_ids)[i]["name"] for i in range(len(cat_ids)))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DatasetFormatError(f"{ann_path.name} is not a COCO instances file ({type(error).__name__})") from None
    index = {c: i for i, c in enumerate(cat_ids)}

    def mask_loader(ann: dict):
        return lambda: coco.annToMask(ann).astype(bool)

    samples = []
    for position, image_id in enumerate(sorted(coco.getImgIds()), 1):
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        objects = []
        for ann in anns:
            if ann.get("category_id") not in index:
                raise DatasetFormatError(f"{ann_path.name}: an annotation of image number {position} (in id order) "
                                         "has a category id that 'categories' does not list")
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, TypeError, ValueError):
                raise DatasetFormatError(f"{ann_path.name}: an annotation of image number {position} (in id order) "
                                         "has no [x, y, width, height] bbox") from None
            objects.append(ObjectAnnotation(index[ann["category_id"]], (x, y, x + w, y + h), False, mask_loader(ann)))
        if not objects and not with_empty:
            continue
        file_name = info.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise DatasetFormatError(f"{ann_path.name}: image number {position} (in id order) has no file_name")
        try:
            size = (int(info["width"]), int(info["height"]))
        except (KeyError, TypeError, ValueError):
            raise DatasetFormatError(f"{ann_path.name}: image number {position} (in id order) has no integer width and height") from None
        path = folder / file_name
        check_file(path, roots, base=folder)  # a file_name of "../…" or a link that leads out
        samples.append(
            Sample(
                key=Path(file_name).stem,
                labels=tuple(sorted({o.label for o in objects})),
                size=size,
                objects=tuple(objects),
                path=str(path),
                roots=roots,
                base=str(folder),
            )
        )
    if not samples:
        raise DatasetFormatError(f"{ann_path.name} has no annotated image")
    return Dataset(name="coco2014-val", version=ann_path.name, root=str(folder), class_names=names, samples=tuple(samples))
