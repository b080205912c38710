"""Shared reads of the explain app: what a user may see, and descriptions built from the core."""
from __future__ import annotations

from django.db.models import Prefetch

from .core import custom, registry
from .core.enhance import ENHANCE_PARAMS
from .models import ClassifierModel, ExplanationSet, InputImage, Job, MethodSetting


def models_visible_to(user):
    return ClassifierModel.objects.visible_to(user)


def models_owned_by(user):
    return ClassifierModel.objects.filter(owner=user)


def images_of(user):
    return InputImage.objects.filter(owner=user)


def explanation_sets_of(user):
    return (ExplanationSet.objects.filter(owner=user).select_related("model", "image")
            .prefetch_related(Prefetch("jobs", queryset=Job.objects.order_by("created_at", "id"))))


def jobs_of(user):
    return Job.objects.owned_by(user).select_related("explanation_set", "explanation_set__model", "explanation_set__image")


def method_settings_of(user):
    return MethodSetting.objects.filter(owner=user).select_related("model")


def method_setting_for(*, user, model: ClassifierModel, method_key: str) -> MethodSetting | None:
    if user is None or not user.is_authenticated:
        return None
    return MethodSetting.objects.filter(owner=user, model=model, method_key=method_key).first()


def method_unsupported_reason(model: ClassifierModel, method_key: str) -> str:
    """Why the architecture of ``model`` cannot be explained by ``method_key`` ("" when it can).

    The engine's own reason (``Method.unsupported_reason`` for the real architecture: family,
    Swin's channels-last stages, a fixed input size, …), recorded on the row by
    ``services.classifier_model_layers_ensure``; only a row not yet described falls back to the
    family the method declares."""
    cls = registry.get_method_class(method_key)
    label = cls.label or cls.key
    recorded = (model.method_support or {}).get(cls.key)
    if recorded is not None:
        return f"{label} {recorded}." if recorded else ""
    if model.family not in cls.families:
        names = " and ".join("ViT" if f == "vit" else "CNN" for f in sorted(cls.families))
        return f"{label} supports {names} models only; {model.name} is a {model.get_family_display()}."
    return ""


def method_availability(model: ClassifierModel, method_key: str) -> str:
    """Why ``method_key`` cannot run on ``model`` now ("" when it can): its architecture, then its weights."""
    reason = method_unsupported_reason(model, method_key)
    if reason:
        return reason
    if not model.weights_present:
        return f"The weights of {model.name} are not installed on this server."
    return ""


def method_schema(model: ClassifierModel, method_key: str) -> dict:
    """``Method.schema`` with the model's layers as the layer choices, from the row (no network built)."""
    cls = registry.get_method_class(method_key)
    schema = cls.schema(None)
    role = "tokens" if model.family == "vit" else "cam"
    for entry in schema["params"]:
        if entry["kind"] == "layer":
            entry["choices"] = list(model.layers)
            entry["default"] = entry["default"] or model.default_layers.get(entry.get("role") or role)
    schema["reason_unsupported"] = method_unsupported_reason(model, method_key)
    schema["reason_unavailable"] = method_availability(model, method_key)
    schema["enhance_params"] = [p.to_schema() for p in ENHANCE_PARAMS]
    return schema


def methods_for_model(model: ClassifierModel, user=None) -> list[dict]:
    """Every registered method for ``model``: schema, availability and the user's saved values."""
    saved = {}
    if user is not None and user.is_authenticated:
        saved = {s.method_key: s for s in MethodSetting.objects.filter(owner=user, model=model)}
    out = []
    for key in registry.method_keys():
        schema = method_schema(model, key)
        setting = saved.get(key)
        schema["saved_params"] = setting.params if setting else {}
        schema["saved_enhance_params"] = setting.enhance_params if setting else {}
        out.append(schema)
    return out


#: Most architectures one search answers.
ARCHITECTURE_SEARCH_LIMIT = 50


def architectures_matching(query: str = "", *, limit: int = ARCHITECTURE_SEARCH_LIMIT) -> list[dict]:
    """Architecture names an upload accepts: without ``query`` the suggested list
    (``custom.ARCHITECTURES``); with one, every classification model name of
    ``torchvision.models.list_models()`` and ``timm.list_models()`` holding each of its words
    (case-insensitive), the suggested first, then the shorter, at most ``limit``. ``family`` is
    known for the suggested ones only (the others' is read off the module when uploaded)."""
    suggested = [{"name": a.name, "library": a.library, "family": a.family, "suggested": True}
                 for a in custom.ARCHITECTURES.values()]
    words = [w for w in (query or "").lower().split() if w]
    if not words:
        return suggested
    import timm
    import torchvision.models as tvm

    found = {a["name"]: a for a in suggested}
    # torchvision first: a name both libraries know is built by torchvision (custom.get_architecture).
    for library, names in (("torchvision", tvm.list_models(module=tvm)), ("timm", timm.list_models())):
        for name in names:
            if name not in found:
                found[name] = {"name": name, "library": library, "family": "", "suggested": False}
    hits = [a for name, a in found.items() if all(w in name.lower() for w in words)]
    hits.sort(key=lambda a: (not a["suggested"], len(a["name"]), a["name"]))
    return hits[:limit]
