"""Per-image metric functions and their aggregators, one module per metric family.

Each family has a function that scores one (image, method, class) and returns a frozen
record with ``to_dict``/``from_dict`` (so runs store records and resume), and an
``aggregate_*`` function that turns records into the table the protocol defines.
"""
from .causal import CausalRecord, aggregate_causal, auc, causal_curves, causal_record, probability_group
from .perturbation import PerturbationRecord, aggregate_perturbation, perturbation_record
from .pointing import PointingRecord, aggregate_pointing, pointing_pairs, pointing_record
from .sanity import SanityRecord, aggregate_sanity, randomizable_layers, sanity_records
from .segmentation import SegmentationRecord, aggregate_segmentation, average_precision, segmentation_record

__all__ = [
    "CausalRecord", "aggregate_causal", "auc", "causal_curves", "causal_record", "probability_group",
    "PerturbationRecord", "aggregate_perturbation", "perturbation_record",
    "PointingRecord", "aggregate_pointing", "pointing_pairs", "pointing_record",
    "SanityRecord", "aggregate_sanity", "randomizable_layers", "sanity_records",
    "SegmentationRecord", "aggregate_segmentation", "average_precision", "segmentation_record",
]
