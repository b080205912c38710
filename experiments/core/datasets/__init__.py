"""Data-set readers: each reads a standard on-disk layout into one :class:`Dataset` type.

Every reader takes ``allowed_roots`` and refuses paths outside them (:class:`PathNotAllowed`):
the paths it is given, and every file it opens, whose real path (symbolic links followed) is
checked when the set is listed and again when the file is opened.
"""
from .base import (
    NAME_PATTERN,
    Dataset,
    DatasetFormatError,
    ObjectAnnotation,
    PathNotAllowed,
    Sample,
    box_mask,
    check_file,
    check_name,
    check_path,
    open_checked,
    roots_of,
)
from .coco import read_coco2014_val
from .ilsvrc import read_ilsvrc2012_val
from .imagenet_seg import read_imagenet_segmentation
from .sample import (
    MAX_LOCALISATION_IMAGES,
    MAX_SEED,
    SAMPLE_VERSION,
    sample_cache_prune,
    sample_check_options,
    sample_dataset,
    sample_is_cached,
    sample_photos,
)
from .voc import VOC_CLASSES, read_voc2007

__all__ = [
    "Dataset", "DatasetFormatError", "ObjectAnnotation", "PathNotAllowed", "Sample", "box_mask", "check_path",
    "check_file", "check_name", "open_checked", "roots_of", "NAME_PATTERN",
    "read_coco2014_val", "read_ilsvrc2012_val", "read_imagenet_segmentation", "read_voc2007", "VOC_CLASSES",
    "SAMPLE_VERSION", "MAX_LOCALISATION_IMAGES", "MAX_SEED", "sample_dataset", "sample_photos",
    "sample_cache_prune", "sample_check_options", "sample_is_cached",
]
