"""Server-rendered pages. Writes go through the services; the interactive parts talk to the REST API."""
from __future__ import annotations

import json
import logging

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Q
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from explain import selectors as explain_selectors
from explain import services as explain_services
from explain.core import custom, registry
from explain.core.enhance import ENHANCE_PARAMS
from explain.models import ExplanationSet, Job
from sharing import selectors as sharing_selectors
from sharing import services as sharing_services

logger = logging.getLogger(__name__)


def home(request):
    return redirect("frontend:explain" if request.user.is_authenticated else "accounts:login")


def _workbench(request, mode: str):
    models = list(explain_selectors.models_visible_to(request.user))
    sets = explain_selectors.explanation_sets_of(request.user)
    opened = None
    if request.GET.get("set"):
        try:
            opened = sets.get(pk=int(request.GET["set"]))
        except (ValueError, ExplanationSet.DoesNotExist):
            raise Http404("no such explanation set") from None
    config = {
        "mode": mode,
        "samples": [{"key": k, "name": v} for k, v in explain_services.SAMPLES.items()],
        "set_url": reverse("explain:explanationset-detail", args=[opened.pk]) if opened else None,
    }
    # annotate(Count) adds a GROUP BY: order explicitly, newest first, so the six shown are the latest.
    recent = sets.annotate(
        maps=Count("jobs", filter=Q(jobs__kind=Job.Kind.EXPLAIN, jobs__status=Job.Status.DONE))
    ).order_by("-created_at", "-pk")
    return render(request, "frontend/workbench.html", {
        "mode": mode, "models": models, "config": config, "recent": recent[:6],
        "default_model": opened.model_id if opened else next((m.pk for m in models if m.weights_present), None),
    })


@login_required
def explain_page(request):
    return _workbench(request, "explain")


@login_required
def segment_page(request):
    return _workbench(request, "segment")


# -- models ---------------------------------------------------------------------------------

class UploadForm(forms.Form):
    name = forms.CharField(max_length=100)
    architecture = forms.ChoiceField(choices=[])
    weights = forms.FileField(help_text=".safetensors or a PyTorch state_dict (.pth/.pt); never unpickled as code")
    class_names = forms.FileField(required=False, help_text="optional text file, one class name per line, in output order")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["architecture"].choices = [
            (library, [(a.name, f"{a.name} ({a.family.upper()})") for a in custom.ARCHITECTURES.values()
                       if a.library == library])
            for library in ("torchvision", "timm")
        ]


@login_required
def models_page(request):
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        text = None
        upload = form.cleaned_data.get("class_names")
        try:
            if upload is not None:
                text = explain_services.class_names_read(upload)
            model = explain_services.classifier_model_upload(
                owner=request.user, name=form.cleaned_data["name"], architecture=form.cleaned_data["architecture"],
                weights=form.cleaned_data["weights"], class_names_text=text)
        except ValueError as error:
            form.add_error(None, f"The model was not saved: {error}")
        else:
            messages.success(request, f"{model.name} was checked and saved ({model.num_classes} classes).")
            return redirect("frontend:models")
    builtins = explain_selectors.models_visible_to(None)
    own = explain_selectors.models_owned_by(request.user)
    return render(request, "frontend/models.html", {"form": form, "builtins": builtins, "own": own,
                                                    "weights_mirror": settings.WEIGHTS_MIRROR})


@login_required
@require_POST
def builtin_weights_import(request, pk: int):
    if not request.user.is_staff:
        raise Http404("only operators import weights")
    model = get_object_or_404(explain_selectors.models_visible_to(None), pk=pk)
    upload = request.FILES.get("weights")
    if upload is None:
        messages.error(request, "Choose a weights file to import.")
        return redirect("frontend:models")
    try:
        explain_services.builtin_weights_import(model=model, weights=upload)
    except ValueError as error:
        messages.error(request, f"The weights of {model.name} were not installed: {error}")
    else:
        messages.success(request, f"The weights of {model.name} were checked and installed.")
    return redirect("frontend:models")


@login_required
@require_POST
def builtin_weights_fetch(request, pk: int):
    """An operator asks a worker to download a built-in's published weights (never done unasked)."""
    if not request.user.is_staff:
        raise PermissionDenied("only operators fetch weights")
    model = get_object_or_404(explain_selectors.models_visible_to(None), pk=pk)
    try:
        explain_services.builtin_weights_fetch_request(model=model, requested_by=request.user)
    except ValueError as error:
        messages.error(request, f"The weights of {model.name} were not fetched: {error}")
    else:
        messages.success(request, f"A worker is fetching the weights of {model.name}; reload this page to follow it.")
    return redirect("frontend:models")


@login_required
@require_POST
def model_rename(request, pk: int):
    model = get_object_or_404(explain_selectors.models_owned_by(request.user), pk=pk)
    try:
        explain_services.classifier_model_rename(model=model, name=request.POST.get("name", ""))
    except ValueError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Renamed to {model.name}.")
    return redirect("frontend:models")


@login_required
@require_POST
def model_delete(request, pk: int):
    model = get_object_or_404(explain_selectors.models_owned_by(request.user), pk=pk)
    name = model.name
    explain_services.classifier_model_delete(model=model)
    messages.success(request, f"{name} was deleted.")
    return redirect("frontend:models")


# -- method settings ------------------------------------------------------------------------

def _form_fields(schema_params: list[dict], saved: dict, prefix: str = "") -> list[dict]:
    fields = []
    for p in schema_params:
        value = saved.get(p["name"], p["default"])
        if value is None:
            value = ""  # an empty field: the default resolved where the method runs (see its help)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        fields.append({**p, "value": value, "input_name": prefix + p["name"],
                       "step": "1" if p["kind"] == "int" else "any"})
    return fields


@login_required
def settings_page(request):
    models = [m for m in explain_selectors.models_visible_to(request.user)]
    if not models:
        return render(request, "frontend/settings.html", {"models": []})
    try:
        model_id = int(request.GET.get("model") or request.POST.get("model") or 0)
    except ValueError:
        model_id = 0
    model = next((m for m in models if m.pk == model_id), None) or next((m for m in models if m.weights_present), models[0])
    keys = registry.method_keys()
    explain_services.classifier_model_layers_ensure(model=model)
    methods = [{"key": k, "label": registry.get_method_class(k).label or k,
                "reason": explain_selectors.method_unsupported_reason(model, k)} for k in keys]
    runnable = [m["key"] for m in methods if not m["reason"]] or keys
    method_key = request.GET.get("method") or request.POST.get("method") or runnable[0]
    if method_key not in keys:
        raise Http404("unknown method")
    if request.GET.get("pick") and method_key not in runnable:
        # The picker changed the model under a method it cannot run: open on one it can.
        messages.info(request, explain_selectors.method_unsupported_reason(model, method_key)
                      + f" Showing {registry.get_method_class(runnable[0]).label or runnable[0]} instead.")
        return redirect(f"{reverse('frontend:settings')}?model={model.pk}&method={runnable[0]}")
    errors: list[str] = []
    if request.method == "POST":
        if "reset" in request.POST:
            explain_services.method_setting_reset(owner=request.user, model=model, method_key=method_key)
            messages.success(request, "Back to the default parameters.")
            return redirect(f"{reverse('frontend:settings')}?model={model.pk}&method={method_key}")
        cls = registry.get_method_class(method_key)
        params = {}
        for p in cls.params:
            if p.kind == "bool":
                params[p.name] = p.name in request.POST
            else:
                params[p.name] = request.POST.get(p.name, "")
        enhance = {p.name: request.POST.get("enhance_" + p.name, "") for p in ENHANCE_PARAMS}
        try:
            explain_services.method_setting_save(owner=request.user, model=model, method_key=method_key,
                                                 params=params, enhance_params=enhance)
        except ValueError as error:
            errors.append(str(error))
        else:
            messages.success(request, f"Saved: these parameters now apply whenever you run {cls.label} on {model.name}.")
            return redirect(f"{reverse('frontend:settings')}?model={model.pk}&method={method_key}")
    schema = explain_selectors.method_schema(model, method_key)
    setting = explain_selectors.method_setting_for(user=request.user, model=model, method_key=method_key)
    saved = setting.params if setting else {}
    saved_enhance = setting.enhance_params if setting else {}
    if request.method == "POST":  # show what was typed next to the error
        saved = {k: v for k, v in request.POST.items()}
        saved_enhance = {k[len("enhance_"):]: v for k, v in request.POST.items() if k.startswith("enhance_")}
    return render(request, "frontend/settings.html", {
        "models": models, "model": model, "methods": methods, "unsupported": [m for m in methods if m["reason"]],
        "method_key": method_key, "schema": schema, "fields": _form_fields(schema["params"], saved),
        "enhance_fields": _form_fields(schema["enhance_params"], saved_enhance, prefix="enhance_"),
        "setting": setting, "errors": errors,
        "saved_settings": explain_selectors.method_settings_of(request.user),
    })


# -- shares ---------------------------------------------------------------------------------

@login_required
def shares_page(request):
    shares = sharing_selectors.shares_of(request.user)
    return render(request, "frontend/shares.html", {"shares": shares})


@login_required
@require_POST
def share_revoke(request, pk: int):
    share = get_object_or_404(sharing_selectors.shares_of(request.user), pk=pk)
    sharing_services.share_revoke(share=share)
    messages.success(request, "The link was revoked; it now answers “not found”.")
    return redirect("frontend:shares")


def shared_context(explanation_set, share) -> dict:
    """What the public page of an explanation set shows (registered with the sharing app)."""
    jobs = explanation_set.jobs.filter(kind=Job.Kind.EXPLAIN, status=Job.Status.DONE)
    wanted = share.options.get("jobs")
    if wanted:
        jobs = jobs.filter(pk__in=wanted)
    image = explanation_set.image
    items = []
    for job in jobs:
        cls_label = job.method_key
        try:
            cls_label = registry.get_method_class(job.method_key).label or job.method_key
        except ValueError:
            pass
        items.append({
            "id": job.pk, "label": cls_label, "enhance": job.enhance, "seconds": job.seconds,
            "target": job.target, "target_name": job.manifest.get("class_name", ""),
            "map_url": reverse("sharing:public-file", args=[share.token, f"map-{job.pk}"]),
            "raw_url": reverse("sharing:public-file", args=[share.token, f"raw-{job.pk}"]),
            "map_max": job.map_max, "manifest": job.manifest,
            "manifest_json": json.dumps(job.manifest, indent=2, sort_keys=True),
        })
    config = {
        "mode": "segment" if share.view == "segmentation" else "explain",
        "image_url": reverse("sharing:public-file", args=[share.token, "image"]),
        "width": image.display_width, "height": image.display_height,
        "jobs": [{k: v for k, v in item.items() if k not in ("manifest", "manifest_json")} for item in items],
        "options": share.options,
    }
    return {"set": explanation_set, "items": items, "image": image, "config": config,
            "mode": config["mode"]}
