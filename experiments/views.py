"""The experiments REST API and pages. Each write calls one service.

Every queryset is the requesting user's own runs, so others' runs answer 404. Domain errors
(``ValueError`` subclasses from the services and the core) become 4xx in the project's one
exception handler (``saliency_site.errors``).
"""
from __future__ import annotations

import json
import logging

from django.contrib.auth.decorators import login_required
from django.db.models import Sum
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from explain.selectors import models_visible_to

from . import selectors, serializers, services
from .models import Experiment

logger = logging.getLogger(__name__)


class RecordPagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class ExperimentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                        viewsets.GenericViewSet):
    """Benchmark runs. POST queues one (202, with the estimate); GET shows progress, ETA and the
    table; ``cancel``, ``resume``, ``records`` (drill-down), ``export/txt|csv|json|rankings``."""

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Experiment.objects.none()
        return selectors.experiments_of(self.request.user)

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.ExperimentDetailSerializer
        if self.action == "records":
            return serializers.RecordSerializer
        return serializers.ExperimentSerializer

    @extend_schema(request=serializers.ExperimentCreateSerializer,
                   responses={202: serializers.ExperimentSerializer})
    def create(self, request, *args, **kwargs):
        data = serializers.ExperimentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        model = _visible_model(request.user, values.pop("model"))
        experiment = services.experiment_create(owner=request.user, model=model, **values)
        url = reverse("experiments:experiment-detail", args=[experiment.pk])
        return Response(serializers.ExperimentSerializer(experiment).data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": url})

    @extend_schema(request=serializers.ExperimentEstimateSerializer,
                   responses={200: serializers.ExperimentEstimateResultSerializer})
    @action(detail=False, methods=["post"])
    def estimate(self, request):
        """The estimate of a new run, from the body POST would take: validated alike, nothing stored."""
        data = serializers.ExperimentEstimateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        plan = services.experiment_plan(
            owner=request.user, model=_visible_model(request.user, values["model"]), dataset=values["dataset"],
            methods=values["methods"], protocols=values["protocols"], shard_size=values.get("shard_size"))
        return Response(selectors.estimate_summary(plan=plan))

    def perform_destroy(self, instance):
        services.experiment_delete(experiment=instance)

    @extend_schema(request=None, responses={200: serializers.ExperimentSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        experiment = services.experiment_cancel(experiment=self.get_object())
        return Response(serializers.ExperimentSerializer(experiment).data)

    @extend_schema(request=None, responses={200: serializers.ExperimentSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        experiment = services.experiment_resume(experiment=self.get_object())
        return Response(serializers.ExperimentSerializer(experiment).data)

    @extend_schema(parameters=[
        OpenApiParameter("image", int), OpenApiParameter("method", int, description="method slot"),
        OpenApiParameter("protocol", str), OpenApiParameter("failed", bool)])
    @action(detail=True, methods=["get"])
    def records(self, request, pk=None):
        experiment = self.get_object()

        def number(name):
            value = request.query_params.get(name)
            if value in (None, ""):
                return None
            try:
                return int(value)
            except ValueError:
                raise exceptions.ValidationError({name: "must be an integer"}) from None

        failed = request.query_params.get("failed")
        qs = selectors.records_of(experiment=experiment, image_index=number("image"), method_slot=number("method"),
                                  protocol=request.query_params.get("protocol") or None,
                                  failed=None if failed in (None, "") else failed.lower() in ("1", "true", "yes"))
        paginator = RecordPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        context = {"class_names": selectors.run_class_names(experiment),
                   "protocols": {p["name"]: p for p in experiment.protocols}}
        return paginator.get_paginated_response(serializers.RecordSerializer(page, many=True, context=context).data)

    @extend_schema(responses={(200, "image/png"): OpenApiResponse(description="the image as the protocol's input")},
                   parameters=[OpenApiParameter("protocol", str)])
    @action(detail=True, methods=["get"], url_path=r"images/(?P<index>\d+)")
    def image(self, request, pk=None, index=None):
        png = selectors.experiment_image_png(experiment=self.get_object(), index=int(index),
                                             protocol=request.query_params.get("protocol"))
        response = HttpResponse(png, content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, parameters=[OpenApiParameter("protocol", str)])
    @action(detail=True, methods=["get"], url_path=r"images/(?P<index>\d+)/truth")
    def truth(self, request, pk=None, index=None):
        """Image ``index``'s ground truth for the drill-down: classes by name, boxes and masks in the
        protocol's view, and that view's geometry."""
        return Response(selectors.experiment_image_truth(experiment=self.get_object(), index=int(index),
                                                         protocol=request.query_params.get("protocol")))

    @extend_schema(responses={(200, "image/png"): OpenApiResponse(description="ground truth, white on black")},
                   parameters=[OpenApiParameter("protocol", str), OpenApiParameter("class", int)])
    @action(detail=True, methods=["get"], url_path=r"images/(?P<index>\d+)/mask")
    def mask(self, request, pk=None, index=None):
        raw = request.query_params.get("class")
        if raw not in (None, "") and not raw.lstrip("-").isdigit():
            raise exceptions.ValidationError({"class": "must be an integer"})
        png = selectors.experiment_mask_png(experiment=self.get_object(), index=int(index),
                                            protocol=request.query_params.get("protocol"),
                                            class_id=None if raw in (None, "") else int(raw))
        response = HttpResponse(png, content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response

    @extend_schema(responses={(200, "text/plain"): OpenApiResponse(
        description="plain-text backup, CSV, JSON, or the rankings across metrics as CSV")},
                   parameters=[OpenApiParameter("records", bool, description="CSV: one row per record")])
    @action(detail=True, methods=["get"], url_path=r"export/(?P<kind>txt|csv|json|rankings)")
    def export(self, request, pk=None, kind=None):
        return export_response(self.get_object(), kind, records=request.query_params.get("records") in ("1", "true"))

    @extend_schema(parameters=[OpenApiParameter("ids", str, description="comma-separated run ids")],
                   responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"])
    def compare(self, request):
        try:
            ids = [int(i) for i in request.query_params.get("ids", "").split(",") if i.strip()]
        except ValueError:
            raise exceptions.ValidationError({"ids": "comma-separated run ids"}) from None
        runs = list(self.get_queryset().filter(pk__in=ids).order_by("pk"))
        if len(runs) != len(set(ids)) or not runs:
            raise exceptions.NotFound("some of these runs do not exist or are not yours")
        return Response(selectors.experiments_compare(experiments=runs))

    # Named apart from ``options``: a method of that name would shadow DRF's OPTIONS handler on
    # every route of this viewset (OPTIONS on a run then called it with ``pk`` and answered 500).
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"], url_path="options", url_name="options")
    def new_run_options(self, request):
        """Models, methods (with the two baselines), protocols and data-set kinds for a new run."""
        return Response(selectors.experiment_options(user=request.user))


class PresetViewSet(viewsets.ViewSet):
    """Presets that reproduce published tables: the list with what each needs on this server,
    and ``run`` to queue one (202, the run as ``POST /api/experiments/`` answers)."""

    lookup_field = "key"
    lookup_value_regex = r"[a-z0-9][a-z0-9-]*"

    @extend_schema(responses={200: {"type": "object"}})  # a list action: the schema is wrapped in an array
    def list(self, request):
        return Response(services.presets_list(user=request.user))

    @extend_schema(request=serializers.PresetRunSerializer, responses={202: serializers.ExperimentSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request, key=None):
        data = serializers.PresetRunSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        experiment = services.preset_run(owner=request.user, key=key, model_id=values.pop("model", None), **values)
        url = reverse("experiments:experiment-detail", args=[experiment.pk])
        return Response(serializers.ExperimentSerializer(experiment).data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": url})


def _visible_model(user, pk: int):
    model = models_visible_to(user).filter(pk=pk).first()
    if model is None:
        raise exceptions.ValidationError({"model": "no such model"})
    return model


def export_response(experiment: Experiment, kind: str, *, records: bool = False) -> HttpResponse:
    stem = f"experiment-{experiment.pk}"
    if kind == "txt":
        response = HttpResponse(selectors.experiment_text_backup(experiment=experiment), content_type="text/plain; charset=utf-8")
        name = f"{stem}.txt"
    elif kind == "rankings":
        response = HttpResponse(selectors.experiment_rankings_csv(experiment=experiment), content_type="text/csv; charset=utf-8")
        name = f"{stem}-rankings.csv"
    elif kind == "csv":
        response = HttpResponse(selectors.experiment_csv(experiment=experiment, records=records), content_type="text/csv; charset=utf-8")
        name = f"{stem}{'-records' if records else ''}.csv"
    else:
        response = JsonResponse(selectors.experiment_json(experiment=experiment), json_dumps_params={"indent": 1})
        name = f"{stem}.json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# -- pages ------------------------------------------------------------------------------------

@login_required
def experiments_page(request):
    runs = list(selectors.experiments_of(request.user).annotate(units_done=Sum("shards__units_done"))[:200])
    places = selectors.queue_positions()
    for run in runs:
        run.queue_place = places.get(run.pk)
    config = {"options": selectors.experiment_options(user=request.user), "api": reverse("experiments:experiment-list")}
    return render(request, "experiments/list.html", {"runs": runs, "config": config})


def _detail_context(experiment: Experiment, *, shared_token: str | None = None) -> dict:
    data = serializers.ExperimentDetailSerializer(experiment).data
    config = {
        "run": json.loads(json.dumps(data, default=str)),
        "api": None if shared_token else reverse("experiments:experiment-detail", args=[experiment.pk]),
        "shared": bool(shared_token),
    }
    provenance = selectors.experiment_provenance(experiment=experiment, public=bool(shared_token))
    provenance["dataset"] = {k: v for k, v in provenance["dataset"].items() if k != "keys"}
    if shared_token:  # a link's viewer sees the data set by name, never the server's folders
        config["run"]["dataset"] = config["run"]["dataset_info"] = selectors.dataset_public(experiment)
    return {"run": experiment, "config": config, "provenance": provenance, "progress": data["progress"]}


@login_required
def experiment_page(request, pk: int):
    experiment = get_object_or_404(selectors.experiments_of(request.user), pk=pk)
    return render(request, "experiments/detail.html", _detail_context(experiment))


@login_required
def presets_page(request):
    # The ones that can run here first (the bundled preset on a fresh install).
    presets = sorted(services.presets_list(user=request.user), key=lambda p: not p["available"])
    return render(request, "experiments/presets.html", {"presets": presets, "config": {
        "api": reverse("experiments:preset-list"), "presets": presets}})


@login_required
def compare_page(request):
    runs = list(selectors.experiments_of(request.user).filter(status=Experiment.Status.DONE)[:200])
    return render(request, "experiments/compare.html", {"runs": runs, "config": {
        "api": reverse("experiments:experiment-compare"), "selected": request.GET.get("ids", "")}})


# -- sharing ----------------------------------------------------------------------------------

def _shared_context(experiment: Experiment, share) -> dict:
    return _detail_context(experiment, shared_token=share.token)


class _Download:
    """A file-like answer for the sharing app's file view (exports are built, not stored)."""

    def __init__(self, data: bytes):
        self.data = data

    def open(self, mode="rb"):
        import io

        return io.BytesIO(self.data)


def _shared_files(experiment: Experiment, share, name: str):
    if name == "export.txt":
        return (_Download(selectors.experiment_text_backup(experiment=experiment, public=True).encode()), "text/plain",
                f"experiment-{experiment.pk}.txt")
    if name == "export.csv":
        return _Download(selectors.experiment_csv(experiment=experiment).encode()), "text/csv", f"experiment-{experiment.pk}.csv"
    if name == "export-rankings.csv":
        return (_Download(selectors.experiment_rankings_csv(experiment=experiment).encode()), "text/csv",
                f"experiment-{experiment.pk}-rankings.csv")
    if name == "export.json":
        return (_Download(json.dumps(selectors.experiment_json(experiment=experiment, public=True), indent=1).encode()),
                "application/json", f"experiment-{experiment.pk}.json")
    return None


def register_share_view() -> None:
    from sharing.registry import register_view

    register_view("experiment", Experiment, template="experiments/detail.html", context=_shared_context,
                  owner_of=lambda obj: obj.owner_id, files=_shared_files, title=lambda obj: f"Experiment: {obj.name}")
