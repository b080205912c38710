"""The explain REST API: DRF viewsets, each action calling one service.

Every queryset is filtered to the requesting user's objects, so other users' objects
answer 404. Domain errors (``ValueError`` subclasses from the core and the services) become
4xx answers in the project's one exception handler (``saliency_site.errors``).
"""
from __future__ import annotations

import logging
import time

from django.http import FileResponse, HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from . import job_events, selectors, serializers, services
from .models import ClassifierModel, ExplanationSet, InputImage, Job, MethodSetting

logger = logging.getLogger(__name__)


def _accepted(url: str, jobs: list[str]) -> Response:
    return Response({"url": url, "jobs": jobs}, status=status.HTTP_202_ACCEPTED, headers={"Location": url})


class ClassifierModelViewSet(viewsets.ModelViewSet):
    """Built-in models and the user's uploads. Upload: multipart ``name``, ``architecture``, ``weights``,
    optional ``class_names`` (text, one per line). Only the user's own models can be renamed or deleted."""

    parser_classes = [MultiPartParser, FormParser, JSONParser]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return ClassifierModel.objects.none()
        return selectors.models_visible_to(self.request.user)

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.ClassifierModelDetailSerializer
        return serializers.ClassifierModelSerializer

    def _own(self) -> ClassifierModel:
        model = self.get_object()
        if model.is_builtin:
            raise exceptions.PermissionDenied("built-in models cannot be changed")
        return model

    @extend_schema(request={"multipart/form-data": serializers.ClassifierModelUploadSerializer},
                   responses={201: serializers.ClassifierModelSerializer})
    def create(self, request, *args, **kwargs):
        data = serializers.ClassifierModelUploadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        names = data.validated_data.get("class_names")
        text = services.class_names_read(names) if names is not None else None
        model = services.classifier_model_upload(
            owner=request.user, name=data.validated_data["name"],
            architecture=data.validated_data["architecture"], weights=data.validated_data["weights"],
            class_names_text=text)
        return Response(serializers.ClassifierModelSerializer(model).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=serializers.RenameSerializer, responses={200: serializers.ClassifierModelSerializer})
    def partial_update(self, request, *args, **kwargs):
        model = self._own()
        data = serializers.RenameSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = services.classifier_model_rename(model=model, name=data.validated_data["name"])
        return Response(serializers.ClassifierModelSerializer(model).data)

    def update(self, request, *args, **kwargs):
        raise exceptions.MethodNotAllowed("PUT")

    def destroy(self, request, *args, **kwargs):
        services.classifier_model_delete(model=self._own())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request={"multipart/form-data": serializers.WeightsImportSerializer},
                   responses={200: serializers.ClassifierModelSerializer})
    @action(detail=True, methods=["post"], permission_classes=[permissions.IsAdminUser])
    def weights(self, request, pk=None):
        """Operators (staff) install pretrained weights for a built-in model on a machine without internet."""
        data = serializers.WeightsImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = services.builtin_weights_import(model=self.get_object(), weights=data.validated_data["weights"])
        return Response(serializers.ClassifierModelSerializer(model).data)

    @extend_schema(responses={200: OpenApiResponse(description="method schemas with availability and saved values")})
    @action(detail=True, methods=["get"])
    def methods(self, request, pk=None):
        """Every method with its parameter schema for this model, why it cannot run (if so), and the
        user's saved values."""
        model = services.classifier_model_layers_ensure(model=self.get_object())
        return Response(selectors.methods_for_model(model, request.user))


class ArchitectureView(APIView):
    """Architectures a user may upload weights for: any classification model name that
    ``torchvision.models`` or ``timm.create_model`` builds. Without ``q`` the suggested list;
    ``?q=convnext tiny`` searches both libraries' names (every word must occur), at most 50."""

    @extend_schema(parameters=[OpenApiParameter("q", str, description="words the architecture name must hold")],
                   responses={200: serializers.ArchitectureSerializer(many=True)})
    def get(self, request):
        query = request.query_params.get("q", "")
        if len(query) > 100:
            raise exceptions.ValidationError({"q": "search with at most 100 characters"})
        return Response(selectors.architectures_matching(query))


class MethodSettingViewSet(viewsets.ModelViewSet):
    """Saved method parameters per model. POST creates or replaces; DELETE resets to the defaults."""

    serializer_class = serializers.MethodSettingSerializer
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return MethodSetting.objects.none()
        return selectors.method_settings_of(self.request.user)

    def _save(self, data, status_code):
        setting = services.method_setting_save(
            owner=self.request.user, model=data["model"], method_key=data["method_key"],
            params=data.get("params", {}), enhance_params=data.get("enhance_params", {}))
        return Response(self.get_serializer(setting).data, status=status_code)

    def create(self, request, *args, **kwargs):
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._save(data.validated_data, status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        setting = self.get_object()
        data = self.get_serializer(setting, data=request.data)
        data.is_valid(raise_exception=True)
        return self._save(data.validated_data, status.HTTP_200_OK)

    def destroy(self, request, *args, **kwargs):
        setting = self.get_object()
        services.method_setting_reset(owner=request.user, model=setting.model, method_key=setting.method_key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InputImageViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin,
                        mixins.DestroyModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Images to explain: upload a file (multipart ``file``) or pick a bundled ``sample``."""

    serializer_class = serializers.InputImageSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return InputImage.objects.none()
        return selectors.images_of(self.request.user)

    @extend_schema(request={"multipart/form-data": serializers.InputImageCreateSerializer,
                            "application/json": serializers.InputImageCreateSerializer},
                   responses={201: serializers.InputImageSerializer})
    def create(self, request, *args, **kwargs):
        data = serializers.InputImageCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = services.image_create(owner=request.user, upload=data.validated_data.get("file"),
                                      sample=data.validated_data.get("sample"))
        return Response(serializers.InputImageSerializer(image).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        services.image_delete(image=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={(200, "image/jpeg"): OpenApiResponse(description="the display JPEG")})
    @action(detail=True, methods=["get"], url_path="display")
    def display(self, request, pk=None):
        image = self.get_object()
        return FileResponse(image.display_file.open("rb"), content_type="image/jpeg")


class SampleSerializer(serializers.serializers.Serializer):
    key = serializers.serializers.CharField()
    name = serializers.serializers.CharField()


class SampleView(APIView):
    """The bundled sample photos."""

    @extend_schema(responses={200: SampleSerializer(many=True)})
    def get(self, request):
        return Response([{"key": k, "name": v} for k, v in services.SAMPLES.items()])


class ExplanationSetViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin,
                            mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """One image on one model. Creating it queues the prediction (202); ``maps`` queues one job per method."""

    serializer_class = serializers.ExplanationSetSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return ExplanationSet.objects.none()
        return selectors.explanation_sets_of(self.request.user)

    @extend_schema(request=serializers.ExplanationSetCreateSerializer, responses={202: serializers.AcceptedSerializer})
    def create(self, request, *args, **kwargs):
        data = serializers.ExplanationSetCreateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        explanation_set = services.explanation_set_create(owner=request.user, **data.validated_data)
        url = serializers.ExplanationSetSerializer(explanation_set).get_url(explanation_set)
        jobs = [serializers.JobSerializer().get_url(job) for job in explanation_set.jobs.all()]
        return _accepted(url, jobs)

    def destroy(self, request, *args, **kwargs):
        services.explanation_set_delete(explanation_set=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=serializers.MapsRequestSerializer, responses={202: serializers.MapsAcceptedSerializer})
    @action(detail=True, methods=["post"])
    def maps(self, request, pk=None):
        """Queue saliency maps of class ``target`` for each of ``methods`` (``[{"key", "enhance"}]``)."""
        explanation_set = self.get_object()
        data = serializers.MapsRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        jobs = services.explanation_jobs_create(explanation_set=explanation_set, **data.validated_data)
        url = serializers.ExplanationSetSerializer(explanation_set).get_url(explanation_set)
        response = _accepted(url, [serializers.JobSerializer().get_url(job) for job in jobs])
        rows = serializers.JobSerializer(selectors.jobs_of(request.user).filter(pk__in=[job.pk for job in jobs]),
                                         many=True, context=self.get_serializer_context()).data
        response.data.update(results=rows, version=job_events.version_of(rows))
        return response


class JobViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Queued work: status, progress, error, runtime, provenance and links to the map.

    ``?ids=3,4,5`` lists just those jobs (one request to follow a whole generation). The list
    carries its ``version``; ``&wait=5&seen=<version>`` holds the answer until one of the jobs
    changes or 5 s pass (a long poll: see ``explain.job_events``), and says whether it could
    (``waited``: false when every waiting slot of this process is taken, and the page polls).
    """

    serializer_class = serializers.JobSerializer

    def _query(self) -> dict:
        query = serializers.JobListQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return query.validated_data

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Job.objects.none()
        jobs = selectors.jobs_of(self.request.user)
        if self.action == "list" and "ids" in (query := self._query()):
            jobs = jobs.filter(pk__in=query["ids"])
        return jobs

    def _listed(self, request, *args, **kwargs) -> Response:
        response = super().list(request, *args, **kwargs)
        response.data["version"] = job_events.version_of(response.data["results"])
        return response

    @extend_schema(parameters=[serializers.JobListQuerySerializer])
    def list(self, request, *args, **kwargs):
        query = self._query()
        if not query["wait"]:
            return self._listed(request, *args, **kwargs)
        deadline = time.monotonic() + query["wait"]
        with job_events.listening(query["ids"], queue=True) as listener:
            response = self._listed(request, *args, **kwargs)
            # A wake-up for another job's start (the queue moved) may leave this list as it was: wait on.
            while (listener is not None and response.data["version"] == query["seen"]
                   and any(job["status"] in (Job.Status.QUEUED, Job.Status.RUNNING) for job in response.data["results"])
                   and (left := deadline - time.monotonic()) > 0 and listener.wait(left)):
                response = self._listed(request, *args, **kwargs)
        response.data["waited"] = listener is not None
        return response

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiResponse(
        description="float32 little-endian, map_height × map_width, aligned with the display image")})
    @action(detail=True, methods=["get"])
    def map(self, request, pk=None):
        return map_response(self.get_object())

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiResponse(
        description=".npy, the map on the model input; X-Saliency-Region and X-Saliency-Box say which part "
                    "of the image it covers")})
    @action(detail=True, methods=["get"])
    def raw(self, request, pk=None):
        return raw_response(self.get_object())


def map_response(job) -> HttpResponse:
    if not job.map_file:
        raise exceptions.NotFound("this job has no map (yet)")
    with job.map_file.open("rb") as handle:
        body = handle.read()
    response = HttpResponse(body, content_type="application/octet-stream")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def raw_response(job) -> FileResponse:
    if not job.raw_file:
        raise exceptions.NotFound("this job has no map (yet)")
    # The array is the map on the model input; name and headers say which part of the image that is.
    region = "whole-image" if job.region == "whole" else "centre-crop"
    name = f"{job.method_key}{'-enhanced' if job.enhance else ''}-class{job.target}-{region}.npy"
    response = FileResponse(job.raw_file.open("rb"), as_attachment=True, filename=name,
                            content_type="application/octet-stream")
    box = (job.manifest or {}).get("region", {}).get("box")
    response["X-Saliency-Region"] = region
    if box:
        response["X-Saliency-Box"] = ",".join(f"{v:g}" for v in box)  # left,top,right,bottom in image pixels
    return response
