"""Aggregation: the table per protocol, the curves the plots draw, the manifest of what the workers used."""
from __future__ import annotations

import math

import numpy as np
from django.utils import timezone

from explain.core.engine import library_versions

from ..core import metrics
from ..core.protocols import (
    InsertionDeletionProtocol,
    PerturbationProtocol,
    PointingProtocol,
    Protocol,
    SanityProtocol,
    SegmentationProtocol,
    protocol_from_dict,
)
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
    if isinstance(protocol, InsertionDeletionProtocol):
        return [{"key": "insertion", "label": "Insertion AUC", "better": "higher"},
                {"key": "deletion", "label": "Deletion AUC", "better": "lower"},
                {"key": "overall", "label": "Overall", "better": "higher"}]
    if isinstance(protocol, PerturbationProtocol):
        cols = []
        for mode in protocol.explain:
            cols += [{"key": f"{mode}.positive", "label": f"Positive AUC ({mode})", "better": "lower"},
                     {"key": f"{mode}.negative", "label": f"Negative AUC ({mode})", "better": "higher"},
                     {"key": f"{mode}.overall", "label": f"Overall ({mode})", "better": "higher"}]
        return cols
    if isinstance(protocol, PointingProtocol):
        return [{"key": "all", "label": "Pointing (all)", "better": "higher"},
                {"key": "difficult", "label": "Pointing (difficult)", "better": "higher"}]
    if isinstance(protocol, SegmentationProtocol):
        return [{"key": "pixel_accuracy", "label": "Pixel accuracy", "better": "higher"},
                {"key": "miou", "label": "mIoU", "better": "higher"},
                {"key": "map", "label": "mAP", "better": "higher"},
                {"key": "iou_foreground", "label": "IoU foreground", "better": "higher"},
                {"key": "iou_background", "label": "IoU background", "better": "higher"}]
    if isinstance(protocol, SanityProtocol):
        cols = []
        for mode in protocol.modes:
            cols += [{"key": f"{mode}.spearman_abs", "label": f"Spearman |map| ({mode})", "better": "lower"},
                     {"key": f"{mode}.ssim", "label": f"SSIM ({mode})", "better": "lower"},
                     {"key": f"{mode}.hog", "label": f"HOG ({mode})", "better": "lower"}]
        return cols
    return []


def _summarise(protocol: Protocol, records: list[dict], class_names) -> tuple[dict, dict]:
    """``(metrics for the table, extras for the plots)`` of one method's records."""
    if isinstance(protocol, InsertionDeletionProtocol):
        agg = metrics.aggregate_causal(records, protocol)
        return ({k: agg[k] for k in ("insertion", "deletion", "overall")},
                {"insertion_curve": agg["insertion_curve"], "deletion_curve": agg["deletion_curve"],
                 "groups": agg["groups"]})
    if isinstance(protocol, PerturbationProtocol):
        agg = metrics.aggregate_perturbation(records, protocol)
        values = {f"{mode}.{k}": agg.get(mode, {}).get(k) for mode in protocol.explain
                  for k in ("positive", "negative", "overall")}
        return values, {"modes": agg}
    if isinstance(protocol, PointingProtocol):
        agg = metrics.aggregate_pointing(records, class_names)
        return ({"all": agg["all"]["score"], "difficult": agg["difficult"]["score"]},
                {"n_all": agg["all"]["n"], "n_difficult": agg["difficult"]["n"], "per_class": agg["all"]["per_class"]})
    if isinstance(protocol, SegmentationProtocol):
        agg = metrics.aggregate_segmentation(records)
        return {k: agg[k] for k in ("pixel_accuracy", "miou", "map", "iou_foreground", "iou_background")}, {}
    if isinstance(protocol, SanityProtocol):
        steps = [step for r in records for step in r.get("steps", [])]
        agg = metrics.aggregate_sanity(steps)
        values = {}
        for mode in protocol.modes:
            rows = agg.get(mode, [])
            for key in ("spearman_abs", "ssim", "hog"):
                means = [row[key]["mean"] for row in rows if row[key]["mean"] is not None]
                values[f"{mode}.{key}"] = float(np.mean(means)) if means else None
        return values, {"steps": agg}
    return {}, {}


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
                                 "params": protocol.params(), "columns": columns, "rows": rows, "best": best})
    return out
