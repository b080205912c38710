"""Serializers of the explain API: they validate input shapes and render rows; services do the work."""
from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from . import job_events
from .core import custom, imaging, registry
from .queueing import QueueSnapshot
from .models import ClassifierModel, ExplanationSet, InputImage, Job, MethodSetting
from .services import SAMPLES


class ClassifierModelSerializer(serializers.ModelSerializer):
    is_builtin = serializers.BooleanField(read_only=True)

    class Meta:
        model = ClassifierModel
        fields = ["id", "name", "is_builtin", "builtin_key", "architecture", "family", "num_classes",
                  "weights_present", "weights_sha256", "default_layers", "preprocessing", "created_at"]
        read_only_fields = fields


class ClassifierModelDetailSerializer(ClassifierModelSerializer):
    class Meta(ClassifierModelSerializer.Meta):
        fields = ClassifierModelSerializer.Meta.fields + ["class_names", "layers"]
        read_only_fields = fields


class ClassifierModelUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    architecture = serializers.CharField(
        max_length=100, help_text="any classification model name timm.create_model or torchvision.models builds")
    weights = serializers.FileField(help_text=".safetensors or a PyTorch state_dict (.pth/.pt)")
    class_names = serializers.FileField(required=False, help_text="text file, one class name per line")

    def validate_architecture(self, value: str) -> str:
        try:
            custom.get_architecture(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None
        return value


class WeightsImportSerializer(serializers.Serializer):
    weights = serializers.FileField(help_text=".safetensors or a PyTorch state_dict for the built-in architecture")


class RenameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class ArchitectureSerializer(serializers.Serializer):
    name = serializers.CharField()
    library = serializers.CharField()
    family = serializers.CharField(help_text="cnn or vit; empty where only the upload tells")
    suggested = serializers.BooleanField()


class MethodSettingSerializer(serializers.ModelSerializer):
    model = serializers.PrimaryKeyRelatedField(queryset=ClassifierModel.objects.none())
    method_key = serializers.ChoiceField(choices=[])
    params = serializers.DictField(required=False, default=dict)
    enhance_params = serializers.DictField(required=False, default=dict)

    class Meta:
        model = MethodSetting
        fields = ["id", "model", "method_key", "params", "enhance_params", "updated_at"]
        read_only_fields = ["id", "updated_at"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["model"].queryset = ClassifierModel.objects.visible_to(request.user)
        self.fields["method_key"].choices = registry.method_keys()


class InputImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = InputImage
        fields = ["id", "name", "width", "height", "display_width", "display_height", "sha256", "url", "created_at"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("explain:image-display", args=[obj.pk])


class InputImageCreateSerializer(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="an image file (JPEG, PNG, WebP, …)")
    sample = serializers.ChoiceField(choices=sorted(SAMPLES), required=False, help_text="a bundled sample photo")

    def validate(self, data):
        if ("file" in data) == ("sample" in data):
            raise serializers.ValidationError("send either `file` (an image) or `sample` (a sample name)")
        return data


def _queue(serializer) -> QueueSnapshot:
    """The interactive queue, read at most once per response and only if a job in it is queued or
    running (kept on the root serializer: a page of sets with their jobs reads it once)."""
    root = serializer.root
    queue = getattr(root, "_queue_snapshot", None)
    if queue is None:
        queue = root._queue_snapshot = QueueSnapshot()
    return queue


class JobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    method_label = serializers.SerializerMethodField()
    target_name = serializers.SerializerMethodField()
    map_url = serializers.SerializerMethodField()
    raw_url = serializers.SerializerMethodField()
    map_width = serializers.IntegerField(source="explanation_set.image.display_width", read_only=True)
    map_height = serializers.IntegerField(source="explanation_set.image.display_height", read_only=True)
    queue_position = serializers.SerializerMethodField(
        help_text="1 for the next job to start on the interactive queue (all users' jobs count); null unless queued")
    estimate_s = serializers.SerializerMethodField(
        help_text="seconds until the result is expected, from the measured runtimes of the jobs ahead and of "
                  "this one's kind; null when finished or not known")
    region_box = serializers.SerializerMethodField(
        help_text="the part of the image the map covers: [left, top, right, bottom] as fractions of its width and height")

    class Meta:
        model = Job
        fields = ["id", "url", "explanation_set", "kind", "method_key", "method_label", "target", "target_name",
                  "enhance", "params", "enhance_params", "status", "progress", "error", "seconds", "manifest",
                  "map_url", "raw_url", "map_width", "map_height", "map_max", "created_at", "started_at",
                  "finished_at", "queue_position", "estimate_s"]
        fields += ["region", "region_box"]
        read_only_fields = fields

    def get_queue_position(self, obj) -> int | None:
        return _queue(self).position(obj)

    def get_estimate_s(self, obj) -> float | None:
        return _queue(self).estimate(obj)

    def get_region_box(self, obj) -> list[float]:
        image, prep = obj.explanation_set.image, obj.explanation_set.model.preprocessing or {}
        geometry = imaging.geometry_for(image.width, image.height, int(prep.get("resize_size", 256)),
                                        int(prep.get("input_size", 224)), obj.region)
        left, top, right, bottom = geometry.box()
        return [round(left / image.width, 5), round(top / image.height, 5),
                round(right / image.width, 5), round(bottom / image.height, 5)]

    def get_url(self, obj) -> str:
        return reverse("explain:job-detail", args=[obj.pk])

    def get_method_label(self, obj) -> str:
        if not obj.method_key:
            return "Prediction"
        try:
            cls = registry.get_method_class(obj.method_key)
        except ValueError:
            return obj.method_key
        return cls.label or cls.key

    def get_target_name(self, obj) -> str | None:
        names = obj.explanation_set.model.class_names
        return names[obj.target] if obj.target is not None and 0 <= obj.target < len(names) else None

    def get_map_url(self, obj) -> str | None:
        return reverse("explain:job-map", args=[obj.pk]) if obj.map_file else None

    def get_raw_url(self, obj) -> str | None:
        return reverse("explain:job-raw", args=[obj.pk]) if obj.raw_file else None


class JobListQuerySerializer(serializers.Serializer):
    """``GET /api/jobs/``'s query: which jobs, and how long to hold the answer while nothing changes."""

    ids = serializers.CharField(required=False, help_text="comma-separated job ids")
    wait = serializers.FloatField(
        required=False, default=0.0, min_value=0.0, max_value=job_events.MAX_WAIT_S,
        help_text="with ids and seen: hold the answer up to this many seconds while the jobs' version equals seen")
    seen = serializers.CharField(required=False, max_length=32,
                                 help_text="the version of the list the client holds (from an earlier answer)")

    def validate_ids(self, value: str) -> list[int]:
        try:
            return [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise serializers.ValidationError("give job ids as comma-separated integers") from None

    def validate(self, data):
        if data["wait"] and ("ids" not in data or "seen" not in data):
            raise serializers.ValidationError({"wait": "waiting needs the jobs (ids) and the version seen (seen)"})
        return data


class ExplanationSetSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    model_name = serializers.CharField(source="model.name", read_only=True)
    image = InputImageSerializer(read_only=True)
    jobs = JobSerializer(many=True, read_only=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = ExplanationSet
        fields = ["id", "url", "model", "model_name", "image", "predictions", "status", "jobs", "created_at"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("explain:explanationset-detail", args=[obj.pk])

    def get_status(self, obj) -> str:
        """The prediction's status: the set is ready for maps once it is "done"."""
        predict = next((j for j in obj.jobs.all() if j.kind == Job.Kind.PREDICT), None)
        if predict is None:
            return Job.Status.DONE
        if predict.status == Job.Status.DONE and not obj.predictions:
            # The set row was read just before the worker stored the top-5 and the job row just
            # after it finished (two queries, two snapshots): still running, as far as this answer knows.
            return Job.Status.RUNNING
        return predict.status


class ExplanationSetCreateSerializer(serializers.Serializer):
    model = serializers.PrimaryKeyRelatedField(queryset=ClassifierModel.objects.none())
    image = serializers.PrimaryKeyRelatedField(queryset=InputImage.objects.none())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None:
            self.fields["model"].queryset = ClassifierModel.objects.visible_to(request.user)
            self.fields["image"].queryset = InputImage.objects.filter(owner=request.user)


class MethodRequestSerializer(serializers.Serializer):
    key = serializers.CharField()
    enhance = serializers.BooleanField(default=False)


class MapsRequestSerializer(serializers.Serializer):
    target = serializers.IntegerField(min_value=0)
    methods = MethodRequestSerializer(many=True, allow_empty=False)
    region = serializers.ChoiceField(
        choices=list(imaging.REGIONS), default="crop",
        help_text="what the maps cover: the model's centre crop, or the whole image resized without a crop (CNNs)")


class AcceptedSerializer(serializers.Serializer):
    """A 202 answer: where to follow the queued work."""

    url = serializers.CharField()
    jobs = serializers.ListField(child=serializers.CharField())


class MapsAcceptedSerializer(AcceptedSerializer):
    """The 202 answer to a maps request, with the jobs as ``GET /api/jobs/?ids=…`` lists them: the
    page draws its cards and starts waiting at once, one round trip sooner."""

    results = JobSerializer(many=True)
    version = serializers.CharField(help_text="the list's version, for ``GET /api/jobs/?ids=…&wait=…&seen=``")
