"""A run's method slots: the explainer registry, validated against the model, plus two baselines that live only here."""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from explain import services as explain_services
from explain.core import registry
from explain.models import ClassifierModel
from explain.selectors import method_availability, method_setting_for
from saliency_site.errors import InputError


BASELINES: dict[str, str] = {
    "baseline_random": "Random map (baseline)",
    "baseline_centre": "Centre map (baseline)",
}


def baseline_map(key: str, height: int, width: int, *, seed: int) -> np.ndarray:
    """A model-independent ``height × width`` map: the floor every method should beat.

    ``baseline_random``: i.i.d. uniform values from ``seed`` (ties have probability 0).
    ``baseline_centre``: a Gaussian ``exp(−d² / 2σ²)`` of the distance ``d`` (pixels) to the
    image centre with ``σ = min(height, width) / 4`` (photographers centre their subjects,
    so pointing at the centre is a strong prior on many data sets).
    """
    if key == "baseline_random":
        return np.random.default_rng(seed).random((height, width)).astype(np.float32)
    if key == "baseline_centre":
        y, x = np.mgrid[0:height, 0:width]
        sigma = min(height, width) / 4
        d2 = (x - (width - 1) / 2) ** 2 + (y - (height - 1) / 2) ** 2
        return np.exp(-d2 / (2 * sigma ** 2)).astype(np.float32)
    raise InputError(f"unknown baseline {key!r}; choose one of {sorted(BASELINES)}")


def method_entries(*, owner, model: ClassifierModel, methods: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Validated method slots; the owner's saved settings for each method on the model apply,
    parameters given here override them."""
    if not methods:
        raise InputError("choose at least one method")
    out, seen = [], set()
    for raw in methods:
        if isinstance(raw, str):
            raw = {"key": raw}
        key = str(raw.get("key", ""))
        enhance = bool(raw.get("enhance", False))
        if key in BASELINES:
            entry = {"key": key, "label": BASELINES[key], "enhance": False, "params": {}, "enhance_params": {},
                     "baseline": True}
        else:
            try:
                cls = registry.get_method_class(key)
            except ValueError as error:
                raise InputError(f"{error}; or a baseline: {sorted(BASELINES)}") from None
            key = cls.key
            reason = method_availability(model, key)
            if reason:
                raise InputError(reason)
            setting = method_setting_for(user=owner, model=model, method_key=key)
            params = {**(setting.params if setting else {}), **dict(raw.get("params") or {})}
            enhance_params = {**(setting.enhance_params if setting else {}), **dict(raw.get("enhance_params") or {})}
            entry = {
                "key": key, "label": cls.label or key, "enhance": enhance,
                "params": explain_services.method_params_validate(model=model, method_key=key, params=params),
                "enhance_params": explain_services.enhance_params_validate(params=enhance_params) if enhance else {},
                "baseline": False,
            }
        ident = (entry["key"], entry["enhance"], json.dumps(entry["params"], sort_keys=True))
        if ident in seen:
            raise InputError(f"{entry['label']}{' + enhancement' if enhance else ''} is listed twice")
        seen.add(ident)
        out.append({"slot": len(out), **entry})
    return out
