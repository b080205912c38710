"""Shared reads of the experiments app: what a user may see, progress and ETA, exports."""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterable

from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from saliency_site.workers import live_workers

from .models import Experiment, Record, Shard


def experiments_of(user):
    return Experiment.objects.owned_by(user).select_related("model")


def experiment_progress(*, experiment: Experiment) -> dict[str, Any]:
    """Units done / total, the fraction, failures, and the ETA in seconds (``None`` when unknown).

    The ETA divides the remaining units by the rate this run has shown (busy seconds per
    computed unit, over the shards running at once); before the first unit it is the estimate.
    """
    agg = experiment.shards.aggregate(
        done=Sum("units_done"), computed=Sum("units_computed"), busy=Sum("busy_seconds"),
    )
    agg["running"] = shards_running(experiment=experiment)
    total = experiment.units_total or 0
    if experiment.status == Experiment.Status.DONE:
        done = total
    else:
        done = min(total, agg["done"] or 0)
    failed = experiment.records.filter(ok=False).count() if experiment.pk else 0
    remaining = max(0, total - done)
    eta = None
    if experiment.status in (Experiment.Status.QUEUED, Experiment.Status.RUNNING, Experiment.Status.SCHEDULED):
        if agg["computed"]:
            per_unit = (agg["busy"] or 0.0) / agg["computed"]
            eta = remaining * per_unit / max(1, agg["running"] or 0)
        elif experiment.estimated_seconds is not None and total:
            eta = experiment.estimated_seconds * remaining / total
    elapsed = None
    if experiment.started_at:
        elapsed = ((experiment.finished_at or timezone.now()) - experiment.started_at).total_seconds()
    return {
        "units_done": done, "units_total": total, "fraction": (done / total) if total else 0.0,
        "failed_records": failed, "eta_seconds": eta, "elapsed_seconds": elapsed,
        "shards_total": experiment.shards.count(),
        "shards_done": experiment.shards.filter(status=Shard.Status.DONE).count(),
        "shards_running": agg["running"] or 0,
        "queue_place": queue_positions().get(experiment.pk) if experiment.status == Experiment.Status.QUEUED else None,
    }


def estimate_summary(*, plan) -> dict[str, Any]:
    """A planned run's estimate as the new-run form shows it (``services.RunPlan`` in)."""
    labels = {m["slot"]: m["label"] + (" + enhancement" if m["enhance"] else "") for m in plan.methods}
    rows = []
    for key, entry in plan.basis.items():
        slot, protocol = key.split("|", 1)
        rows.append({"slot": int(slot), "method": labels[int(slot)], "protocol": protocol,
                     "seconds_per_image": entry["seconds_per_image"], "source": entry["source"]})
    return {
        "estimated_seconds": plan.estimated_seconds, "num_images": plan.num_images,
        "methods": len(plan.methods), "protocols": len(plan.protocols),
        "units_total": plan.num_images * len(plan.methods), "shard_size": plan.shard_size,
        "shards": math.ceil(plan.num_images / plan.shard_size), "prepare": plan.prepare,
        "rows": rows, "basis": plan.basis,
    }


def queue_positions() -> dict[int, tuple[int, int]]:
    """Each queued run's place among the queued runs of the batch queue (everyone's): ``{pk:
    (place, of)}``, in the order their shards were queued (the start time of a scheduled run, else
    its creation; a run started after the owner's current ones counts from its creation).
    Runs with a shard running hold workers already and are not in the list."""
    ids = list(Experiment.objects.filter(status=Experiment.Status.QUEUED)
               .order_by(Coalesce("scheduled_for", "created_at"), "pk").values_list("pk", flat=True))
    return {pk: (place, len(ids)) for place, pk in enumerate(ids, start=1)}


def shards_running(*, experiment: Experiment) -> int:
    """The run's shards that are really running: marked running on a worker that is alive,
    and never more than those workers' pool slots. A shard whose worker died counts as
    waiting until the sweep requeues it."""
    marked = list(experiment.shards.filter(status=Shard.Status.RUNNING).values_list("worker", flat=True))
    if not marked:
        return 0
    live = live_workers()
    if not live:
        return 0
    running = sum(1 for worker in marked if worker in live)
    return min(running, sum(live[worker].concurrency for worker in set(marked) if worker in live))


def records_of(*, experiment: Experiment, image_index: int | None = None, method_slot: int | None = None,
               protocol: str | None = None, failed: bool | None = None):
    qs = Record.objects.filter(experiment=experiment)
    if image_index is not None:
        qs = qs.filter(image_index=image_index)
    if method_slot is not None:
        qs = qs.filter(method_slot=method_slot)
    if protocol:
        qs = qs.filter(protocol=protocol)
    if failed is not None:
        qs = qs.filter(ok=not failed)
    return qs.order_by("image_index", "method_slot", "protocol", "class_id", "variant")


def record_score(record: Record, metric: str | None = None) -> float | None:
    """One headline number per record for the drill-down list, as the protocol's metric family defines it.

    ``metric`` (the protocol's ``metric``) saves looking it up; otherwise it comes from the
    built-in protocol of that name, or from the run's stored protocols (user copies).
    """
    from .core.metrics import get_family
    from .core.protocols import get_protocol

    if not record.ok:
        return None
    if metric is None:
        try:
            metric = get_protocol(record.protocol).metric
        except ValueError:
            stored = [p for p in (record.experiment.protocols or []) if p.get("name") == record.protocol]
            if not stored:
                return None
            metric = stored[0].get("metric")
    try:
        return get_family(metric).record_score(record.data or {})
    except (KeyError, TypeError, ZeroDivisionError):   # a record from an older version of the family
        return None


# ---------------------------------------------------------------------------------------------
# Exports


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


#: What a shared (anonymous) view may show of a run's data set: its name, never where it lives.
PUBLIC_DATASET_FIELDS = ("kind", "name", "version", "selection", "num_images")


def dataset_public(experiment: Experiment) -> dict[str, Any]:
    """The run's data set as a link's viewer sees it: kind, name, version and selection, with no
    server paths (the request's ``paths`` and the reader's ``root`` name folders on the server)."""
    info = {"kind": experiment.dataset.get("kind"), **experiment.dataset_info}
    return {k: info[k] for k in PUBLIC_DATASET_FIELDS if k in info}


def experiment_provenance(*, experiment: Experiment, public: bool = False) -> dict[str, Any]:
    """Everything "What every result stores" lists, except the records and the table.
    ``public``: for a shared link, the data set by name only (:func:`dataset_public`)."""
    dataset = (dataset_public(experiment) if public
               else {"request": experiment.dataset, **{k: v for k, v in experiment.dataset_info.items()}})
    return {
        "id": experiment.pk,
        "name": experiment.name,
        "status": experiment.status,
        "error": experiment.error,
        "model": experiment.model_snapshot,
        "dataset": dataset,
        "methods": experiment.methods,
        "protocols": experiment.protocols,
        "seed": experiment.seed,
        "shard_size": experiment.shard_size,
        "versions": (experiment.manifest or {}).get("versions"),
        "devices": (experiment.manifest or {}).get("devices"),
        "resolved_methods": (experiment.manifest or {}).get("methods"),
        "created_at": experiment.created_at.isoformat() if experiment.created_at else None,
        "scheduled_for": experiment.scheduled_for.isoformat() if experiment.scheduled_for else None,
        "after_current": experiment.after_current,
        "started_at": experiment.started_at.isoformat() if experiment.started_at else None,
        "finished_at": experiment.finished_at.isoformat() if experiment.finished_at else None,
        "estimated_seconds": experiment.estimated_seconds,
        "actual_seconds": experiment.actual_seconds,
        "estimate_basis": experiment.estimate_basis,
    }


def experiment_text_backup(*, experiment: Experiment, public: bool = False) -> str:
    """A plain-text backup a person can read in ten years: time, parameters, results.
    ``public``: for a shared link, without the data set's folder on the server."""
    p = experiment_provenance(experiment=experiment, public=public)
    lines = [
        f"Saliency Workbench experiment #{p['id']}: {p['name']}",
        f"status:      {p['status']}" + (f" ({p['error']})" if p["error"] else ""),
        f"created:     {p['created_at']}",
        f"started:     {p['started_at'] or '—'}",
        f"finished:    {p['finished_at'] or '—'}",
        f"duration:    estimated {_fmt(p['estimated_seconds'])} s, actual {_fmt(p['actual_seconds'])} s",
        f"model:       {p['model'].get('name')} ({p['model'].get('architecture')}, "
        f"{p['model'].get('num_classes')} classes), weights sha256 {p['model'].get('weights_sha256') or '—'}",
        f"data set:    {experiment.dataset_info.get('name')} version {experiment.dataset_info.get('version')}, "
        f"{experiment.dataset_info.get('selection')}, {experiment.dataset_info.get('num_images')} images",
        *([] if public else [f"             root {experiment.dataset_info.get('root')}"]),
        f"seed:        {p['seed']}",
        f"devices:     {', '.join(p['devices'] or []) or '—'}",
        f"versions:    {json.dumps(p['versions'], sort_keys=True) if p['versions'] else '—'}",
        "",
        "Methods:",
    ]
    resolved = p["resolved_methods"] or {}
    for m in experiment.methods:
        r = resolved.get(str(m["slot"])) or {}
        lines.append(f"  [{m['slot']}] {experiment.method_label(m['slot'])}: key {m['key']}, "
                     f"parameters {json.dumps(r.get('params', m['params']), sort_keys=True)}, "
                     f"layer {r.get('layer') or '—'}, enhancement {json.dumps(r.get('enhance') or m['enhance_params'] or (m['enhance'] or None))}")
    for block in (experiment.results or {}).get("protocols", []):
        lines += ["", f"Protocol {block['name']} ({block['metric']}): {block['description']}",
                  f"  parameters: {json.dumps(block['params'], sort_keys=True)}"]
        header = ["method", "n", "failed"] + [c["label"] + (" ↑" if c["better"] == "higher" else " ↓") for c in block["columns"]]
        rows = [[r["label"], str(r["n"]), str(r["failed"])] + [_fmt(r["values"].get(c["key"])) for c in block["columns"]]
                for r in block["rows"]]
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for row in rows:
            lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)))
    if not (experiment.results or {}).get("protocols"):
        lines += ["", "No results yet."]
    lines += _rankings_text((experiment.results or {}).get("rankings") or {})
    lines += _preset_text((experiment.results or {}).get("preset"))
    return "\n".join(lines) + "\n"


def _rankings_text(rankings: dict) -> list[str]:
    """Each method's mean rank ± spread and rank per metric, then the metrics' rank correlations."""
    if not rankings.get("metrics") or len(rankings.get("aggregate", [])) < 2:
        return []
    metrics = rankings["metrics"]
    lines = ["", "Rankings across metrics (1 = best; mean rank ± spread over the metrics a method has):"]
    for i, metric in enumerate(metrics):
        lines.append(f"  [{i + 1}] {metric}")
    for row in rankings["aggregate"]:
        ranks = " ".join(_fmt(rankings["ranks"][m].get(row["method"])).rjust(6) for m in metrics)
        lines.append(f"  {row['method']:<40} {_fmt(row['mean_rank'])} ± {_fmt(row['spread'])}   {ranks}")
    lines.append("Agreement between metrics (Spearman rank correlation):")
    for i, a in enumerate(metrics):
        lines.append(f"  [{i + 1}] " + " ".join(_fmt(rankings["agreement"][a][b]).rjust(6) for b in metrics))
    return lines


def _preset_text(preset: dict | None) -> list[str]:
    if not preset:
        return []
    lines = ["", f"Preset {preset['key']}: {preset['title']}", f"  {preset['rule']}"]
    lines += [f"  {text}" for text in preset.get("statements", [])]
    for r in preset["rows"]:
        lines.append(f"  {r['method']} · {r['protocol']} {r['column']}: published {_fmt(r['published'])}, "
                     f"ours {_fmt(r['ours'])} ({r['verdict']}); {r['source']}")
    return lines


def experiment_csv(*, experiment: Experiment, records: bool = False) -> str:
    """The aggregate table (one row per protocol × method) or, with ``records``, one row per record."""
    out = io.StringIO()
    writer = csv.writer(out)
    if records:
        writer.writerow(["image_index", "image_key", "method_slot", "method", "enhance", "protocol", "class_id",
                         "variant", "ok", "score", "seconds", "error", "data"])
        for r in records_of(experiment=experiment).iterator():
            writer.writerow([r.image_index, r.image_key, r.method_slot, r.method_key, r.enhance, r.protocol,
                             r.class_id, r.variant, r.ok, record_score(r), f"{r.seconds:.4f}", r.error,
                             json.dumps(r.data, sort_keys=True)])
        return out.getvalue()
    ranks = ((experiment.results or {}).get("rankings") or {}).get("ranks", {})
    writer.writerow(["protocol", "protocol_params", "method", "enhance", "n", "failed", "metric", "value", "better", "best",
                     "rank"])
    for block in (experiment.results or {}).get("protocols", []):
        params = json.dumps(block["params"], sort_keys=True)
        for row in block["rows"]:
            for col in block["columns"]:
                value = row["values"].get(col["key"])
                rank = ranks.get(f"{block['name']}:{col['key']}", {}).get(row["label"])
                writer.writerow([block["name"], params, row["label"], row["enhance"], row["n"], row["failed"],
                                 col["key"], "" if value is None else value, col["better"],
                                 value is not None and value == block["best"].get(col["key"]),
                                 "" if rank is None else rank])
    return out.getvalue()


def experiment_rankings_csv(*, experiment: Experiment) -> str:
    """The rankings as CSV: one ``aggregate`` row per method (mean rank, spread, metrics ranked), one
    ``rank`` row per (method, metric), one ``agreement`` row per pair of metrics (Spearman ρ)."""
    rankings = (experiment.results or {}).get("rankings") or {}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["kind", "method", "metric", "other_metric", "value", "spread", "n"])
    for row in rankings.get("aggregate", []):
        writer.writerow(["aggregate", row["method"], "", "", _csv(row["mean_rank"]), _csv(row["spread"]), row["n"]])
    for metric in rankings.get("metrics", []):
        for method, rank in rankings["ranks"].get(metric, {}).items():
            writer.writerow(["rank", method, metric, "", rank, "", ""])
    for a in rankings.get("metrics", []):
        for b in rankings["metrics"]:
            writer.writerow(["agreement", "", a, b, _csv(rankings["agreement"][a][b]), "", ""])
    return out.getvalue()


def _csv(value: Any) -> Any:
    return "" if value is None else value


def experiment_json(*, experiment: Experiment, with_records: bool = True, public: bool = False) -> dict[str, Any]:
    data = {"provenance": experiment_provenance(experiment=experiment, public=public), "results": experiment.results}
    if with_records:
        data["records"] = [
            {"image_index": r.image_index, "image_key": r.image_key, "method_slot": r.method_slot,
             "method": r.method_key, "enhance": r.enhance, "protocol": r.protocol, "class_id": r.class_id,
             "variant": r.variant, "ok": r.ok, "error": r.error, "seconds": r.seconds, "data": r.data}
            for r in records_of(experiment=experiment).iterator()
        ]
    return data


def experiments_compare(*, experiments: Iterable[Experiment]) -> dict[str, Any]:
    """One table per protocol name with a row per (run, method), for runs that share protocols."""
    by_protocol: dict[str, dict] = {}
    runs = []
    for exp in experiments:
        runs.append({"id": exp.pk, "name": exp.name, "model": exp.model_snapshot.get("name"),
                     "dataset": exp.dataset_info.get("name"), "selection": exp.dataset_info.get("selection"),
                     "status": exp.status})
        for block in (exp.results or {}).get("protocols", []):
            entry = by_protocol.setdefault(block["name"], {"name": block["name"], "metric": block["metric"],
                                                           "params": block["params"], "columns": block["columns"],
                                                           "rows": [], "params_differ": False})
            if entry["params"] != block["params"]:
                entry["params_differ"] = True
            for row in block["rows"]:
                entry["rows"].append({"run": exp.pk, "run_name": exp.name, **{k: row[k] for k in ("label", "n", "failed", "values")}})
    for entry in by_protocol.values():
        entry["best"] = {}
        for col in entry["columns"]:
            vals = [r["values"].get(col["key"]) for r in entry["rows"] if r["values"].get(col["key"]) is not None]
            if vals:
                entry["best"][col["key"]] = max(vals) if col["better"] == "higher" else min(vals)
    return {"runs": runs, "protocols": list(by_protocol.values())}


def _view_preprocessing(experiment: Experiment, protocol: str | None):
    """The geometry the drill-down shows image ``protocol`` in: that protocol's model input
    (square 224 when it has no preprocessing or none is named)."""
    from .core.protocols import Preprocessing, protocol_from_dict

    prep = Preprocessing("square", 224)
    for pdata in experiment.protocols:
        if pdata["name"] == protocol:
            proto = protocol_from_dict(pdata)
            prep = getattr(proto, "preprocessing", None) or Preprocessing("square", (experiment.model_snapshot or {}).get("input_size", 224))
    return prep


def _run_dataset(experiment: Experiment, index: int):
    """The run's data set, checked to still be the one the run read, for image ``index``."""
    from . import services

    if experiment.status == Experiment.Status.PREPARING:
        raise services.NotAvailable(f"run #{experiment.pk}'s data set is still being built on a worker; try again shortly")
    if not 0 <= index < experiment.num_images:
        raise services.InputError(f"run #{experiment.pk} has images 0…{experiment.num_images - 1}, not {index}")
    if services.dataset_needs_build(experiment.dataset):
        # Evicted from the bounded sample cache: rebuilt on a worker, never inside this request.
        from .tasks import prepare_dataset  # here, not at the top: the tasks module imports the services

        prepare_dataset.delay(experiment.pk)
        raise services.NotAvailable(f"run #{experiment.pk}'s generated images left the server's sample cache and "
                                    "are being rebuilt on a worker; try again in a minute")
    dataset = services.dataset_open(spec=experiment.dataset)
    keys = experiment.dataset_info.get("keys") or []
    if len(dataset) != experiment.num_images or (index < len(keys) and dataset[index].key != keys[index]):
        raise services.StateError(f"the data set on disk no longer matches run #{experiment.pk}'s "
                                  "(images added, removed or renamed)")
    return dataset


def _png(array, mode: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def experiment_image_png(*, experiment: Experiment, index: int, protocol: str | None = None) -> bytes:
    """Image ``index`` of the run as the protocol's model input saw it (PNG), for the drill-down overlay."""
    from .core.imageops import preprocess_pixels

    prep = _view_preprocessing(experiment, protocol)
    dataset = _run_dataset(experiment, index)
    # load_image opens the file through the data-root check: a link swapped to lead out is refused (403).
    pixels = preprocess_pixels(dataset[index].load_image(), prep)
    return _png((pixels.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype("uint8"), "RGB")


def experiment_mask_png(*, experiment: Experiment, index: int, protocol: str | None = None,
                        class_id: int | None = None) -> bytes:
    """The ground truth of image ``index`` as a black-and-white PNG in the drill-down's geometry:
    the pixels of ``class_id`` (the union of its masks, or boxes), or the foreground mask."""
    import numpy as np

    from . import services
    from .core.imageops import preprocess_mask

    sample = _run_dataset(experiment, index)[index]
    try:
        mask = sample.foreground_mask() if class_id is None else sample.class_mask(class_id)
    except ValueError as error:
        raise services.NotAvailable(f"image {index} has no such ground truth: {error}") from None
    if class_id is not None and not mask.any():
        raise services.InputError(f"image {index} has no object of class {class_id}")
    view = preprocess_mask(mask, _view_preprocessing(experiment, protocol))
    return _png(view.astype(np.uint8) * 255, "L")


def run_class_names(experiment: Experiment) -> list[str]:
    """The names of the classes the run's records refer to: the model's (what it predicts); the
    data set's where the model is gone or unnamed (the two agree in number for every protocol that
    compares them)."""
    model = experiment.model
    if model is not None and model.class_names:
        return list(model.class_names)
    try:
        from . import services

        return list(services.dataset_open(spec=experiment.dataset).class_names)
    except ValueError:     # the data set is gone: the drill-down falls back to the indices
        return []


def experiment_image_truth(*, experiment: Experiment, index: int, protocol: str | None = None) -> dict[str, Any]:
    """What the drill-down draws over image ``index`` besides the maps: the ground-truth classes by
    name, the boxes in the view's pixels, which classes have masks (with their PNG's address), and
    the view's geometry (``view = original · scale − offset``) to place points given in original pixels.

    The image is named by its key in the data set; no server path is part of the answer.
    """
    from django.urls import reverse
    from django.utils.http import urlencode

    from .core.imageops import input_geometry

    dataset = _run_dataset(experiment, index)
    sample = dataset[index]
    names = list(dataset.class_names)
    width, height = sample.size or sample.load_image().size
    prep = _view_preprocessing(experiment, protocol)
    (resized_w, resized_h), (left, top, right, bottom) = input_geometry(width, height, prep)
    sx, sy = resized_w / width, resized_h / height
    base = reverse("experiments:experiment-mask", args=[experiment.pk, index])

    def mask_url(**params) -> str:
        params = {**({"protocol": protocol} if protocol else {}), **params}
        return f"{base}?{urlencode(params)}" if params else base

    def name(class_id: int) -> str:
        return names[class_id] if 0 <= class_id < len(names) else str(class_id)

    objects, masked = [], set()
    for obj in sample.objects:
        box = None
        if obj.box is not None:
            x0, y0, x1, y1 = obj.box
            box = [x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top]
        if obj.mask_loader is not None:
            masked.add(obj.label)
        objects.append({"class_id": obj.label, "name": name(obj.label), "box": box, "difficult": obj.difficult,
                        "mask": obj.mask_loader is not None})
    has_foreground = sample.foreground_loader is not None
    return {
        "index": index, "key": sample.key, "protocol": protocol,
        "original_size": [width, height],
        "view": {"width": right - left, "height": bottom - top, "scale": [sx, sy], "offset": [left, top]},
        "labels": [{"class_id": c, "name": name(c)} for c in sample.labels],
        "objects": objects,
        "masks": {str(c): mask_url(**{"class": c}) for c in sorted(masked)},
        "foreground": mask_url() if has_foreground else None,
    }


def experiment_options(*, user) -> dict[str, Any]:
    """What a new run can be made of: models, methods (with baselines), protocols, data-set kinds."""
    from explain.core import registry
    from explain.selectors import models_visible_to

    from . import services
    from .core.protocols import get_protocol, protocol_names

    methods = []
    for key in registry.method_keys():
        cls = registry.get_method_class(key)
        methods.append({"key": key, "label": cls.label or key, "families": sorted(cls.families), "baseline": False})
    for key, label in services.BASELINES.items():
        methods.append({"key": key, "label": label, "families": ["cnn", "vit"], "baseline": True})
    return {
        "models": [{"id": m.pk, "name": m.name, "family": m.family, "num_classes": m.num_classes,
                    "weights_present": m.weights_present} for m in models_visible_to(user)],
        "methods": methods,
        "protocols": [get_protocol(n).to_dict() for n in protocol_names()],
        "datasets": [{"key": k.key, "label": k.label, "paths": list(k.paths), "optional_paths": list(k.optional_paths),
                      "labels": k.labels, "objects": k.objects, "foreground": k.foreground}
                     for k in services.DATASET_KINDS.values()],
    }
