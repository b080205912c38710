"""Aggregation: the table per protocol, the curves the plots draw, the manifest of what the workers used."""
from __future__ import annotations

import math

from django.utils import timezone

from explain.core.engine import library_versions

from ..core import metrics
from ..core.presets import compare, get_preset, preset_keys
from ..core.protocols import Protocol, protocol_from_dict
from ..core.rankings import rankings
from ..models import Experiment, Record


def run_manifest(exp: Experiment) -> dict:
    """What the workers used: devices, library versions, resolved parameters per method."""
    devices, methods = set(), {}
    for manifest in exp.shards.exclude(manifest={}).values_list("manifest", flat=True):
        devices.add(manifest.get("device", ""))
        for slot, entry in (manifest.get("methods") or {}).items():
            methods.setdefault(slot, entry)
    return {"devices": sorted(d for d in devices if d), "methods": methods, "versions": library_versions(),
            "aggregated_at": timezone.now().isoformat()}


def _columns(protocol: Protocol) -> list[dict]:
    """The table's columns for a protocol: key, label and which direction is better."""
    return metrics.get_family(protocol.metric).columns(protocol)


def _summarise(protocol: Protocol, records: list[dict], class_names) -> tuple[dict, dict]:
    """``(metrics for the table, extras for the plots)`` of one method's records."""
    return metrics.get_family(protocol.metric).summarise(protocol, records, class_names)


def experiment_aggregate(*, experiment: Experiment) -> dict:
    """The aggregate table of every protocol (methods × metrics), best per column marked,
    plus the curves and groups the plots draw. Recomputable from the records at any time."""
    class_names = None
    if experiment.model is not None and experiment.model.class_names:
        class_names = experiment.model.class_names
    out = {"protocols": []}
    for pdata in experiment.protocols:
        protocol = protocol_from_dict(pdata)
        columns = _columns(protocol)
        rows = []
        for method in experiment.methods:
            qs = Record.objects.filter(experiment=experiment, method_slot=method["slot"], protocol=protocol.name)
            good = [data for data in qs.filter(ok=True).values_list("data", flat=True).iterator()]
            failed = qs.filter(ok=False).count()
            values, extras = _summarise(protocol, good, class_names) if good else ({c["key"]: None for c in columns}, {})
            rows.append({"slot": method["slot"], "method": method["key"], "label": experiment.method_label(method["slot"]),
                         "enhance": bool(method.get("enhance")), "baseline": bool(method.get("baseline")),
                         "n": len(good), "failed": failed, "values": values, "extras": extras})
        best = {}
        for col in columns:
            vals = [r["values"].get(col["key"]) for r in rows]
            vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
            if vals:
                best[col["key"]] = max(vals) if col["better"] == "higher" else min(vals)
        out["protocols"].append({"name": protocol.name, "metric": protocol.metric, "description": protocol.description,
                                 "params": protocol.params(), "columns": columns, "rows": rows, "best": best,
                                 "plots": metrics.get_family(protocol.metric).plots(protocol)})
    out["rankings"] = _rankings(out["protocols"])
    # Preset keys are stored with runs and never removed; an unknown one (a run imported from
    # a newer site) leaves the table alone.
    if experiment.preset and experiment.preset in preset_keys():
        out["preset"] = compare(get_preset(experiment.preset), out["protocols"])
    return out


def _rankings(blocks: list[dict]) -> dict:
    """Ranks of the run's methods across every column of every protocol (see core.rankings)."""
    table: dict[str, dict] = {}
    better: dict[str, str] = {}
    for block in blocks:
        for col in block["columns"]:
            key = f"{block['name']}:{col['key']}"
            better[key] = col["better"]
            for row in block["rows"]:
                table.setdefault(row["label"], {})[key] = row["values"].get(col["key"])
    return rankings(table, better) if better else {"metrics": [], "ranks": {}, "aggregate": [], "agreement": {}}
