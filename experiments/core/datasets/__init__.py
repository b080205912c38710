"""Data-set readers: each reads a standard on-disk layout into one :class:`Dataset` type.

Every reader takes ``allowed_roots`` and refuses paths outside them (:class:`PathNotAllowed`).
"""
from .base import Dataset, DatasetFormatError, ObjectAnnotation, PathNotAllowed, Sample, box_mask, check_path
from .coco import read_coco2014_val
from .ilsvrc import read_ilsvrc2012_val
from .imagenet_seg import read_imagenet_segmentation
from .sample import SAMPLE_VERSION, sample_dataset, sample_photos
from .voc import VOC_CLASSES, read_voc2007

__all__ = [
    "Dataset", "DatasetFormatError", "ObjectAnnotation", "PathNotAllowed", "Sample", "box_mask", "check_path",
    "read_coco2014_val", "read_ilsvrc2012_val", "read_imagenet_segmentation", "read_voc2007", "VOC_CLASSES",
    "SAMPLE_VERSION", "sample_dataset", "sample_photos",
]
