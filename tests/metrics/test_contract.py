"""Every registered metric family, with every registered protocol of it, obeys the family contract.

Declarations are well formed (columns, needs, cost, plots), the per-image runner gives JSON
records on a real (tiny) model, the summary fills exactly the declared columns, the declared
plots point at data the summary provides, and the headline score is a number. New families
are covered by registering them: the parametrisation reads the registry.
"""
from __future__ import annotations

import json

import pytest

from experiments.core.metrics import (
    ImageContext,
    MetricFamily,
    family_keys,
    get_family,
    register_metric,
)
from experiments.core.metrics.base import NEEDS
from experiments.core.protocols import (
    Preprocessing,
    copy_protocol,
    get_protocol,
    protocol_names,
)

from .conftest import MEAN, STD, gradient_explainer, synthetic_sample

CASES = [(key, name) for key in family_keys() for name in protocol_names(key)]


def small(protocol):
    """The protocol at a 32-pixel input, so every family runs in well under a second."""
    prep = getattr(protocol, "preprocessing", None)
    changes = {}
    if prep is not None:
        changes["preprocessing"] = Preprocessing(prep.resize, 32, 36 if prep.resize == "shorter" else None)
    if hasattr(protocol, "step"):
        changes["step"] = 100
    return copy_protocol(protocol, f"{protocol.name}-small", **changes) if changes else protocol


def pick(value, path):
    parts = path.split(".")
    for i, part in enumerate(parts):
        if value is None:
            return None
        if part == "*":
            rest = ".".join(parts[i + 1:])
            return [pick(v, rest) for v in value] if rest else value
        value = value.get(part) if isinstance(value, dict) else None
    return value


def test_every_family_has_a_protocol():
    assert family_keys(), "no metric family registered"
    for key in family_keys():
        assert protocol_names(key), f"metric family {key} has no registered protocol"
        assert get_family(key).protocol_class.metric == key


def test_a_taken_key_is_refused():
    family = type(get_family("pointing"))
    with pytest.raises(ValueError, match="already registered"):
        register_metric("pointing")(type("Again", (MetricFamily,), {"protocol_class": family.protocol_class}))


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="no metric family 'nope'"):
        get_family("nope")


@pytest.mark.parametrize("key,name", CASES)
def test_family_contract(key, name, model):
    family = get_family(key)
    protocol = small(get_protocol(name))
    columns = family.columns(protocol)
    assert columns and len({c["key"] for c in columns}) == len(columns)
    assert all(c["better"] in ("higher", "lower") and c["label"] for c in columns)
    assert family.needs(protocol) <= set(NEEDS)
    cost = family.cost(protocol, model_layers=6)
    assert cost.explainer_runs >= 0 and cost.model_passes >= 0 and cost.explainer_runs + cost.model_passes > 0

    records = []
    for seed in range(2):
        sample = synthetic_sample(seed=seed)
        ctx = ImageContext(model=model, mean=MEAN, std=STD, sample=sample, image=sample.load_image(),
                           explainer=gradient_explainer, num_classes=5, seed=seed, index=seed)
        rows = family.run(protocol, ctx)
        assert rows
        for row in rows:
            assert set(row) >= {"class_id", "variant", "data", "saliency"}
            data = json.loads(json.dumps(row["data"]))       # storable as JSON
            score = family.record_score(data)
            assert score is None or isinstance(score, float)
            records.append(data)
    values, extras = family.summarise(protocol, records, None)
    assert set(values) == {c["key"] for c in columns}
    json.dumps(extras)
    family.aggregate(protocol, records)
    for spec in family.plots(protocol):
        assert spec["kind"] in ("line", "bars") and spec["title"]
        paths = [s[k] for s in spec.get("series", []) for k in ("x", "y") if s.get(k)]
        paths += [spec[k] for k in ("groups", "values") if k in spec]
        assert paths
        # every path either resolves in the extras or names a variant this protocol does not run
        resolved = [pick(extras, p) for p in paths]
        if spec["kind"] == "bars":
            assert all(isinstance(r, list) for r in resolved)
