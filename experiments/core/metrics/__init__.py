"""Metric families, one module each, every family one :class:`~.base.MetricFamily` class.

Each module has a function that scores one (image, method, class) and returns a frozen
record with ``to_dict``/``from_dict`` (so runs store records and resume), an ``aggregate_*``
function that turns records into the table the protocol defines, and the family class,
registered with ``@register_metric(key)``, that declares what the rest of the project needs
(data, cost, columns, runner, summary, headline score, plots). ``get_family(protocol.metric)``
finds it; a new family is one new module.

A protocol on a model and a data set, without Django::

    from experiments.core.metrics import ImageContext, get_family
    family = get_family(protocol.metric)
    for sample in dataset:
        ctx = ImageContext(model=module, mean=mean, std=std, sample=sample, image=sample.load_image(),
                           explainer=lambda m, x, t: my_maps(m, x, t), num_classes=1000)
        rows = family.run(protocol, ctx)       # [{"class_id", "variant", "data", "saliency"}, ...]

``run_protocol_many(protocol, contexts)`` runs several images at once; their model passes then
share forward batches (:mod:`.passes`).
"""
import math
from typing import Any, Iterable, Sequence

import torch

from ..protocols import Protocol
from .causal import CausalRecord, aggregate_causal, auc, causal_curves, causal_record, probability_group
from .perturbation import PerturbationRecord, aggregate_perturbation, perturbation_record
from .pointing import PointingRecord, aggregate_pointing, pointing_pairs, pointing_record
from .sanity import SanityRecord, aggregate_sanity, randomizable_layers, sanity_records
from .base import Cost, ImageContext, MetricFamily
from .passes import default_batch_size, drive, drive_one
from .complexity import ComplexityRecord
from .faithfulness import FaithfulnessRecord
from .random_logit import RandomLogitRecord
from .infidelity import InfidelityRecord
from .road import RoadRecord
from .sensitivity import SensitivityRecord
from .registry import family_keys, family_of, get_family, register_metric
from .segmentation import SegmentationRecord, aggregate_segmentation, average_precision, segmentation_record

#: The record type each metric family stores (``Protocol.metric`` → class with ``from_dict``).
RECORD_TYPES = {
    "insertion-deletion": CausalRecord,
    "perturbation": PerturbationRecord,
    "pointing": PointingRecord,
    "segmentation": SegmentationRecord,
    "sanity": SanityRecord,
    "complexity": ComplexityRecord,
    "random-logit": RandomLogitRecord,
    "faithfulness-correlation": FaithfulnessRecord,
    "road": RoadRecord,
    "infidelity": InfidelityRecord,
    "max-sensitivity": SensitivityRecord,
}


def aggregate(protocol: Protocol, records: Iterable[Any], *, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The aggregate table of ``records`` (objects or stored dicts) under ``protocol``'s metric."""
    return get_family(protocol.metric).aggregate(protocol, list(records), class_names=class_names)


def run_protocol(protocol: Protocol, ctx: ImageContext) -> list[dict[str, Any]]:
    """The records of one image under ``protocol``: ``[{"class_id", "variant", "data", "saliency"}, …]``."""
    return get_family(protocol.metric).run(protocol, ctx)


def run_protocol_many(protocol: Protocol, contexts: Sequence[ImageContext]) -> list[list[dict[str, Any]] | BaseException]:
    """:func:`run_protocol` of several images, whose model passes share batches where the family
    allows; each image's rows, or the exception it raised."""
    return get_family(protocol.metric).run_many(protocol, list(contexts))


#: Most images evaluated together by default: bounds the maps and perturbed inputs held at once
#: (and, in a worker, how long a shard runs before it may yield to interactive work).
MAX_IMAGE_GROUP = 8


def image_group_size(protocols: Iterable[Protocol], device: torch.device | str | None, *,
                     most: int = MAX_IMAGE_GROUP) -> int:
    """How many images to hand :func:`run_protocol_many` at once: enough for the lightest of
    ``protocols`` whose family pools its passes to fill ``device``'s forward batch
    (:func:`default_batch_size`), at most ``most``; 1 when none pools. Infidelity's 11 passes
    per image on a CPU batch of 16 give 2; insertion/deletion's 224 give 1."""
    passes = [n for p in protocols if (family := get_family(p.metric)).pools_passes()
              and (n := family.cost(p).model_passes) > 0]
    if not passes:
        return 1
    return max(1, min(most, math.ceil(default_batch_size(device) / min(passes))))


__all__ = [
    "MAX_IMAGE_GROUP", "RECORD_TYPES", "aggregate", "image_group_size", "run_protocol", "run_protocol_many",
    "Cost", "ImageContext", "MetricFamily", "default_batch_size", "drive", "drive_one", "family_keys", "family_of", "get_family", "register_metric",
    "CausalRecord", "aggregate_causal", "auc", "causal_curves", "causal_record", "probability_group",
    "PerturbationRecord", "aggregate_perturbation", "perturbation_record",
    "PointingRecord", "aggregate_pointing", "pointing_pairs", "pointing_record",
    "SanityRecord", "aggregate_sanity", "randomizable_layers", "sanity_records",
    "SegmentationRecord", "aggregate_segmentation", "average_precision", "segmentation_record",
]
