"""Every record type survives the database round trip: strict JSON out, the same record back."""
import json

import pytest

from experiments.core.metrics import (
    CausalRecord,
    PerturbationRecord,
    PointingRecord,
    SanityRecord,
    SegmentationRecord,
)

from experiments.core.metrics import ComplexityRecord, FaithfulnessRecord, RandomLogitRecord, RoadRecord
from experiments.core.metrics import InfidelityRecord, SensitivityRecord

RECORDS = [
    CausalRecord(3, 4, 0.5, 40.0, 10.0, (0.1, 0.5, 0.9), (0.9, 0.2, 0.1)),
    PerturbationRecord(1, 2, "target", (0.0, 0.5), (1, 3), (1, 1)),
    PointingRecord(7, 0.42, (10, 20), True),
    SegmentationRecord(10, 16, (5, 4), (8, 9), 0.75),
    SanityRecord(0, "independent", 2, "fc", 0.1, float("nan"), 0.3, -0.2),
    ComplexityRecord(3, 0.25, 1.5),
    RandomLogitRecord(3, 1, 0.2, 0.4),
    FaithfulnessRecord(3, 0.3),
    RoadRecord(3, 3, 3, (0.5, 0.9), (3, 1), (3, 3), (0.6, 0.1), (0.9, 0.8)),
    InfidelityRecord(3, 0.5, 1.2, 2.0),
    SensitivityRecord(3, 0.4, (0.1, 0.4)),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip_through_strict_json(record):
    text = json.dumps(record.to_dict(), allow_nan=False)
    back = type(record).from_dict(json.loads(text))
    if isinstance(record, SanityRecord):
        assert back.to_dict() == record.to_dict()  # NaN is stored as null
    else:
        assert back == record


def test_every_protocol_has_a_record_type_and_an_aggregator():
    from experiments.core.metrics import RECORD_TYPES, aggregate
    from experiments.core.protocols import get_protocol, protocol_names

    by_type = {type(r): r for r in RECORDS}
    for name in protocol_names():
        protocol = get_protocol(name)
        record = by_type[RECORD_TYPES[protocol.metric]]
        if isinstance(record, PerturbationRecord):
            record = PerturbationRecord(1, 1, "target", tuple(protocol.fractions), (1,) * 10, (1,) * 10)
        if isinstance(record, RoadRecord):
            k = len(protocol.fractions)
            record = RoadRecord(1, 1, 1, tuple(protocol.fractions), (1,) * k, (1,) * k, (0.5,) * k, (0.5,) * k)
        table = aggregate(protocol, [record.to_dict()], class_names=[str(i) for i in range(10)])
        assert table  # a non-empty table for one stored record
