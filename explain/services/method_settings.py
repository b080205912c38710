"""A user's saved parameters per model and method, validated against the method's own schema."""
from __future__ import annotations

import logging
from typing import Any, Mapping


from saliency_site.errors import InputError

from ..core import registry
from ..core.enhance import resolve_enhance_params
from ..models import ClassifierModel, MethodSetting
from .classifiers import classifier_model_layers_ensure

logger = logging.getLogger(__name__)


def method_params_validate(*, model: ClassifierModel, method_key: str, params: Mapping[str, Any]) -> dict:
    """Validated parameter values (JSON-able) for ``method_key`` on ``model``; raise ``ValueError``."""
    cls = registry.get_method_class(method_key)
    known = {p.name: p for p in cls.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"method {method_key!r} has no parameter(s) {unknown}; accepted: {sorted(known) or 'none'}")
    out: dict[str, Any] = {}
    for key, raw in params.items():
        if raw is None or raw == "":
            continue  # "use the default"
        value = known[key].validate(raw)
        if known[key].kind == "layer":
            classifier_model_layers_ensure(model=model)
            if value not in model.layers:
                raise InputError(f"parameter 'layer': {model.name} has no layer {value!r}; pick one from the list")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def enhance_params_validate(*, params: Mapping[str, Any]) -> dict:
    cleaned = {k: v for k, v in params.items() if v is not None and v != ""}
    resolved = resolve_enhance_params(cleaned)
    return {k: resolved[k] for k in cleaned}


def method_setting_save(*, owner, model: ClassifierModel, method_key: str, params: Mapping[str, Any],
                        enhance_params: Mapping[str, Any] | None = None) -> MethodSetting:
    """Save (create or replace) ``owner``'s parameters for ``method_key`` on ``model``."""
    method_key = registry.get_method_class(method_key).key  # aliases store under the key
    clean = method_params_validate(model=model, method_key=method_key, params=params)
    clean_enhance = enhance_params_validate(params=enhance_params or {})
    setting, _ = MethodSetting.objects.update_or_create(
        owner=owner, model=model, method_key=method_key,
        defaults={"params": clean, "enhance_params": clean_enhance},
    )
    return setting


def method_setting_reset(*, owner, model: ClassifierModel, method_key: str) -> None:
    """Back to the built-in defaults for that method on that model."""
    MethodSetting.objects.filter(owner=owner, model=model, method_key=method_key).delete()


