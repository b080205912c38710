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
import os
from pathlib import Path
from typing import Iterable

from .base import Dataset, DatasetFormatError, ObjectAnnotation, Sample, check_path

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

    folder = check_path(images, allowed_roots, what="image folder")
    ann_path = check_path(annotations, allowed_roots, what="annotation file")
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder} is not a folder of COCO images")
    if not ann_path.is_file():
        raise DatasetFormatError(f"{ann_path} is missing (expected instances_val2014.json)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(ann_path))
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetFormatError(f"{ann_path} is not a COCO instances file ({error})") from None
    if "categories" not in coco.dataset or "images" not in coco.dataset:
        raise DatasetFormatError(f"{ann_path} lacks 'images' or 'categories'; use instances_val2014.json")
    cat_ids = sorted(coco.getCatIds())
    index = {c: i for i, c in enumerate(cat_ids)}
    names = tuple(coco.loadCats(cat_ids)[i]["name"] for i in range(len(cat_ids)))

    def mask_loader(ann: dict):
        return lambda: coco.annToMask(ann).astype(bool)

    samples = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        objects = []
        for ann in anns:
            if ann["category_id"] not in index:
                raise DatasetFormatError(f"annotation {ann.get('id')} has unknown category {ann['category_id']}")
            x, y, w, h = ann["bbox"]
            objects.append(ObjectAnnotation(index[ann["category_id"]], (x, y, x + w, y + h), False, mask_loader(ann)))
        if not objects and not with_empty:
            continue
        samples.append(
            Sample(
                key=Path(info["file_name"]).stem,
                labels=tuple(sorted({o.label for o in objects})),
                size=(int(info["width"]), int(info["height"])),
                objects=tuple(objects),
                path=str(folder / info["file_name"]),
            )
        )
    if not samples:
        raise DatasetFormatError(f"{ann_path} has no annotated image")
    return Dataset(name="coco2014-val", version=ann_path.name, root=str(folder), class_names=names, samples=tuple(samples))
