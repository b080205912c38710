"""Per-image metric functions and their aggregators, one module per metric family.

Each family has a function that scores one (image, method, class) and returns a frozen
record with ``to_dict``/``from_dict`` (so runs store records and resume), and an
``aggregate_*`` function that turns records into the table the protocol defines.
"""
from typing import Any, Iterable, Sequence

from ..protocols import Protocol
from .causal import CausalRecord, aggregate_causal, auc, causal_curves, causal_record, probability_group
from .perturbation import PerturbationRecord, aggregate_perturbation, perturbation_record
from .pointing import PointingRecord, aggregate_pointing, pointing_pairs, pointing_record
from .sanity import SanityRecord, aggregate_sanity, randomizable_layers, sanity_records
from .segmentation import SegmentationRecord, aggregate_segmentation, average_precision, segmentation_record

#: The record type each metric family stores (``Protocol.metric`` → class with ``from_dict``).
RECORD_TYPES = {
    "insertion-deletion": CausalRecord,
    "perturbation": PerturbationRecord,
    "pointing": PointingRecord,
    "segmentation": SegmentationRecord,
    "sanity": SanityRecord,
}


def aggregate(protocol: Protocol, records: Iterable[Any], *, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The aggregate table of ``records`` (objects or stored dicts) under ``protocol``'s metric."""
    records = list(records)
    metric = protocol.metric
    if metric == "insertion-deletion":
        return aggregate_causal(records, protocol)
    if metric == "perturbation":
        return aggregate_perturbation(records, protocol)
    if metric == "pointing":
        return aggregate_pointing(records, class_names)
    if metric == "segmentation":
        return aggregate_segmentation(records)
    if metric == "sanity":
        return aggregate_sanity(records)
    raise ValueError(f"no aggregator for metric {metric!r}; known: {sorted(RECORD_TYPES)}")

__all__ = [
    "RECORD_TYPES", "aggregate",
    "CausalRecord", "aggregate_causal", "auc", "causal_curves", "causal_record", "probability_group",
    "PerturbationRecord", "aggregate_perturbation", "perturbation_record",
    "PointingRecord", "aggregate_pointing", "pointing_pairs", "pointing_record",
    "SanityRecord", "aggregate_sanity", "randomizable_layers", "sanity_records",
    "SegmentationRecord", "aggregate_segmentation", "average_precision", "segmentation_record",
]
