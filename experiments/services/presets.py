"""Presets on this server: whether each one can run here, and queueing one through :func:`experiment_create`.

A preset (:mod:`experiments.core.presets`) names its data set by kind and by where it usually
lies under a data root; this module looks for it under the server's ``DATA_ROOTS`` and for the
model among the user's visible models, and says what is missing in words a user can act on
("needs data set … at …", "needs a VGG16 fine-tuned on the 20 VOC classes").
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from django.conf import settings

from explain.models import ClassifierModel
from saliency_site.errors import InputError, NotAvailable, NotFound

from ..core.presets import Preset, get_preset, preset_keys
from ..models import Experiment
from .runs import experiment_create


def _dataset_paths(preset: Preset) -> tuple[dict[str, str] | None, str]:
    """``(absolute paths, "")`` when every path field of the preset's data set exists under a
    data root, else ``(None, what is missing)``."""
    roots = [Path(r) for r in settings.DATA_ROOTS]
    found, missing = {}, []
    for name, relative in preset.dataset.paths.items():
        hit = next((root / relative for root in roots if (root / relative).exists()), None)
        if hit is None:
            missing.append(f"{name} {relative}")
        else:
            found[name] = str(hit)
    if missing:
        where = " or ".join(str(r) for r in roots) or "a data root (none is configured: SALIENCY_DATA_ROOTS)"
        return None, f"needs data set {preset.dataset.label} at {', '.join(missing)} under {where}"
    return found, ""


def _model_candidates(preset: Preset, user) -> list[ClassifierModel]:
    visible = ClassifierModel.objects.visible_to(user).order_by("owner_id", "name")
    if preset.model:
        return list(visible.filter(builtin_key=preset.model, owner__isnull=True))
    return [m for m in visible if preset.num_classes is None or m.num_classes == preset.num_classes]


def preset_availability(*, preset: Preset, user) -> dict[str, Any]:
    """Whether ``preset`` can run here for ``user``: ``{available, reasons, models, dataset_found}``."""
    reasons = []
    candidates = _model_candidates(preset, user)
    if not candidates:
        reasons.append(f"needs {preset.model_need}" if preset.model_need
                       else f"needs the built-in model {preset.model}, which this server does not list")
    elif not any(m.weights_present for m in candidates):
        reasons.append(f"the weights of {candidates[0].name} are not installed on this server; an operator can add "
                       "them with `manage.py import_weights`")
    paths, missing = _dataset_paths(preset)
    if paths is None:
        reasons.append(missing)
    return {"available": not reasons, "reasons": reasons, "dataset_found": paths is not None,
            "models": [{"id": m.pk, "name": m.name, "weights_present": m.weights_present} for m in candidates]}


def presets_list(*, user) -> list[dict[str, Any]]:
    """Every preset with its availability on this server for ``user``."""
    out = []
    for key in preset_keys():
        preset = get_preset(key)
        out.append({**preset.to_dict(), **preset_availability(preset=preset, user=user)})
    return out


def preset_run(*, owner, key: str, model_id: int | None = None, images: int | None = None,
               methods: Sequence[str] | None = None, params: Mapping[str, Mapping[str, Any]] | None = None,
               name: str | None = None, start_at: datetime | None = None, after_current: bool = False) -> Experiment:
    """Queue preset ``key`` as a run of ``owner`` (through :func:`experiment_create`).

    ``model_id``: which visible model, for a preset that needs an uploaded one (or to pick
    among several). ``images``: only the first ``images`` of the data set (a quick check).
    ``methods``: keep only these method keys of the preset (baselines are kept); ``params``:
    parameters per method key over the preset's (e.g. fewer RISE masks).
    """
    try:
        preset = get_preset(key)
    except ValueError as error:
        raise NotFound(str(error)) from None
    candidates = _model_candidates(preset, owner)
    if model_id is not None:
        model = next((m for m in candidates if m.pk == model_id), None)
        if model is None:
            raise InputError(f"model {model_id} does not fit preset {key}: it " +
                             (f"runs on the built-in {preset.model}" if preset.model else f"needs {preset.model_need}"),
                             field="model")
    elif len(candidates) == 1 or (candidates and preset.model):
        model = candidates[0]
    elif candidates:
        raise InputError(f"preset {key} fits several of your models ({', '.join(m.name for m in candidates)}); "
                         "choose one", field="model")
    else:
        raise NotAvailable(f"preset {key} needs {preset.model_need or 'the built-in model ' + str(preset.model)}")
    paths, missing = _dataset_paths(preset)
    if paths is None:
        raise NotAvailable(f"preset {key} {missing}")
    keys = preset.method_keys()
    if methods is not None:
        unknown = sorted(set(methods) - set(keys))
        if unknown:
            raise InputError(f"preset {key} has the methods {keys}, not {unknown}", field="methods")
    params = dict(params or {})
    unknown = sorted(set(params) - set(keys))
    if unknown:
        raise InputError(f"preset {key} has the methods {keys}; there are no parameters for {unknown}", field="params")
    slots = []
    for slot in preset.methods:
        if methods is not None and slot.key not in methods and not slot.key.startswith("baseline_"):
            continue
        request = slot.to_request()
        if slot.key in params:
            request["params"] = {**request.get("params", {}), **dict(params[slot.key])}
        slots.append(request)
    if not any(not s["key"].startswith("baseline_") for s in slots):
        raise InputError(f"choose at least one of the methods {[k for k in keys if not k.startswith('baseline_')]}",
                         field="methods")
    dataset: dict[str, Any] = {"kind": preset.dataset.kind, "paths": paths, "options": dict(preset.dataset.options)}
    if images is not None:
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise InputError("images must be a positive number of images", field="images")
        dataset["subset"] = {"mode": "first", "n": images}
    return experiment_create(owner=owner, name=name or preset.title, model=model, dataset=dataset, methods=slots,
                             protocols=list(preset.protocols), start_at=start_at, after_current=after_current,
                             preset=preset.key)
