"""Request validation and response shapes of the experiments API."""
from __future__ import annotations

import base64

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import selectors
from .services.datasets import dataset_spec
from .models import Experiment, Record


class DatasetSubsetSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["all", "first", "random"], default="all")
    n = serializers.IntegerField(required=False, min_value=1, help_text="images to take (first/random)")
    seed = serializers.IntegerField(required=False, help_text="random: which draw")


class DatasetOptionsSerializer(serializers.Serializer):
    seed = serializers.IntegerField(required=False, help_text="sample-localisation: which generated set")
    num_images = serializers.IntegerField(required=False, min_value=1, help_text="sample-localisation: its size")
    image_set = serializers.CharField(max_length=64, required=False,
                                      help_text="voc2007: an image-set name such as 'test' (a name, not a path)")


class DatasetSerializer(serializers.Serializer):
    """A data-set request. The fields document its shape; validating it is the data-set service's
    own normaliser (``dataset_spec``: types, kinds, path fields, option names and bounds), so the
    API and the command line refuse the same requests with the same words."""

    kind = serializers.CharField(max_length=100)
    paths = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=4096), required=False,
                                  help_text='path fields of the kind, e.g. {"root": "voc/VOC2007"}')
    options = DatasetOptionsSerializer(required=False)
    subset = DatasetSubsetSerializer(required=False)

    def to_internal_value(self, data):
        try:
            return dataset_spec(data)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None


class MethodSlotSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=100)
    enhance = serializers.BooleanField(required=False)
    params = serializers.DictField(required=False)
    enhance_params = serializers.DictField(required=False)


@extend_schema_field({"oneOf": [{"type": "string"}, {
    "type": "object", "required": ["key"], "properties": {
        "key": {"type": "string"}, "enhance": {"type": "boolean"},
        "params": {"type": "object", "additionalProperties": True},
        "enhance_params": {"type": "object", "additionalProperties": True}}}]})
class MethodSlotField(serializers.Field):
    """A method slot: a key (``"gradcam"``, ``"baseline_random"``) or ``{"key", "enhance", "params"}``."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            return MethodSlotSerializer().run_validation({"key": data})["key"]
        if not isinstance(data, dict):
            raise serializers.ValidationError('a method is a key or an object such as {"key": "gradcam"}')
        return dict(MethodSlotSerializer().run_validation(data))

    def to_representation(self, value):
        return value


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": True}]})
class ProtocolField(serializers.Field):
    """A protocol: a name, a copy ``{"copy_of", "name", "params"}`` or a full definition."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not data:
                raise serializers.ValidationError("a protocol name cannot be empty")
            return data
        if not isinstance(data, dict):
            raise serializers.ValidationError('a protocol is a name or an object such as {"copy_of": "thesis-v1"}')
        for name in ("copy_of", "name"):
            if name in data and not isinstance(data[name], str):
                raise serializers.ValidationError(f"{name} must be a string")
        if "params" in data and not isinstance(data["params"], dict):
            raise serializers.ValidationError("params must be an object")
        return data

    def to_representation(self, value):
        return value


class ExperimentCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    model = serializers.IntegerField(help_text="id of a model visible to the user")
    dataset = DatasetSerializer(help_text='{"kind": "voc2007", "paths": {"root": "..."}, '
                                          '"subset": {"mode": "first"|"random"|"all", "n": 100, "seed": 0}}')
    methods = serializers.ListField(child=MethodSlotField(), min_length=1,
                                    help_text='[{"key": "gradcam", "enhance": true, "params": {...}}, "baseline_random"]')
    protocols = serializers.ListField(child=ProtocolField(), min_length=1,
                                      help_text='names ("thesis-v1") or copies {"copy_of", "name", "params"}')
    seed = serializers.IntegerField(default=0)
    shard_size = serializers.IntegerField(required=False, min_value=1, allow_null=True)
    start_at = serializers.DateTimeField(required=False, allow_null=True, help_text="queue overnight: start at this time")
    after_current = serializers.BooleanField(default=False, help_text="start after the current runs have finished")

    def validate_dataset(self, value):
        return _plain(value)

    def validate_methods(self, value):
        return _plain(value)


class ExperimentEstimateSerializer(ExperimentCreateSerializer):
    """The body of a new run, to estimate it before submitting: the same fields, the name optional."""

    name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class EstimateBasisSerializer(serializers.Serializer):
    slot = serializers.IntegerField()
    method = serializers.CharField(help_text="the method's label, '+ enhancement' where enhanced")
    protocol = serializers.CharField()
    seconds_per_image = serializers.FloatField()
    source = serializers.CharField(help_text="measured on this site, or the prior")


class ExperimentEstimateResultSerializer(serializers.Serializer):
    estimated_seconds = serializers.FloatField(help_text="on one worker; what the run would store")
    num_images = serializers.IntegerField()
    methods = serializers.IntegerField()
    protocols = serializers.IntegerField()
    units_total = serializers.IntegerField(help_text="(image, method) units")
    shard_size = serializers.IntegerField()
    shards = serializers.IntegerField()
    prepare = serializers.BooleanField(help_text="the data set is generated on a worker first")
    rows = EstimateBasisSerializer(many=True, help_text="the per-(method, protocol) basis")
    basis = serializers.DictField(help_text="the basis as the run stores it (estimate_basis)")


def _plain(value):
    """Nested validated data as plain dicts and lists (it is stored as JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dataset_summary(info: dict) -> dict:
    # The image keys can be 50 000 long: the exports carry them, the API summary does not.
    return {k: v for k, v in info.items() if k != "keys"}


class ExperimentSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    dataset_info = serializers.SerializerMethodField()
    actual_seconds = serializers.FloatField(read_only=True)
    url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        fields = ["id", "name", "status", "error", "model", "model_snapshot", "dataset", "dataset_info", "methods",
                  "protocols", "seed", "shard_size", "scheduled_for", "after_current", "num_images", "units_total",
                  "estimated_seconds", "estimate_basis", "actual_seconds", "progress", "created_at", "started_at",
                  "finished_at", "url", "page_url", "preset"]

    def get_progress(self, obj) -> dict:
        return selectors.experiment_progress(experiment=obj)

    def get_dataset_info(self, obj) -> dict:
        return _dataset_summary(obj.dataset_info)

    def get_url(self, obj) -> str:
        return reverse("experiments:experiment-detail", args=[obj.pk])

    def get_page_url(self, obj) -> str:
        return reverse("experiments:page-detail", args=[obj.pk])


class ExperimentDetailSerializer(ExperimentSerializer):
    class Meta(ExperimentSerializer.Meta):
        fields = ExperimentSerializer.Meta.fields + ["results", "manifest"]


class RecordSerializer(serializers.ModelSerializer):
    score = serializers.SerializerMethodField()
    thumb = serializers.SerializerMethodField()
    thumb_size = serializers.SerializerMethodField()
    class_name = serializers.SerializerMethodField()
    label_name = serializers.SerializerMethodField()
    pointing = serializers.SerializerMethodField()

    class Meta:
        model = Record
        fields = ["id", "image_index", "image_key", "method_slot", "method_key", "enhance", "protocol", "class_id",
                  "class_name", "label_name", "variant", "ok", "error", "seconds", "score", "data", "pointing",
                  "thumb", "thumb_size"]

    def _name(self, class_id) -> str | None:
        names = self.context.get("class_names") or []
        return names[class_id] if isinstance(class_id, int) and 0 <= class_id < len(names) else None

    def get_class_name(self, obj) -> str | None:
        """The explained class by name (context ``class_names``), or null."""
        return self._name(obj.class_id)

    def get_label_name(self, obj) -> str | None:
        """The ground-truth label a record compared against (perturbation), by name, or null."""
        return self._name((obj.data or {}).get("label"))

    def get_pointing(self, obj) -> dict | None:
        """A pointing-game record's maximum ``point`` (x, y in original pixels), ``hit`` (the
        maximum's own verdict; null for a top-k score) and the protocol's ``tolerance`` in pixels."""
        protocol = (self.context.get("protocols") or {}).get(obj.protocol) or {}
        data = obj.data or {}
        if not obj.ok or protocol.get("metric") != "pointing" or "point" not in data:
            return None
        params = protocol.get("params", protocol)
        top_k = params.get("score") == "top-k"
        return {"point": data["point"], "hit": None if top_k else data.get("score") == 1.0,
                "score": data.get("score"), "tolerance": params.get("tolerance")}

    def get_score(self, obj) -> float | None:
        return selectors.record_score(obj)

    def get_thumb(self, obj) -> str | None:
        """The map as base64 of ``thumb_size²`` uint8 values (row-major), or null."""
        return base64.b64encode(bytes(obj.thumb)).decode("ascii") if obj.thumb else None

    def get_thumb_size(self, obj) -> int:
        return Record.THUMB


class PresetRunSerializer(serializers.Serializer):
    """Queue a preset: everything optional; the preset supplies model, data set, methods and protocols."""

    name = serializers.CharField(max_length=200, required=False, help_text="default: the preset's title")
    model = serializers.IntegerField(required=False, allow_null=True,
                                     help_text="id of a visible model, for presets that need an uploaded one")
    images = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                      help_text="only the first N images (a quick check)")
    methods = serializers.ListField(child=serializers.CharField(max_length=100), required=False, allow_empty=False,
                                    help_text="keep only these method keys of the preset (baselines stay)")
    params = serializers.DictField(child=serializers.DictField(), required=False,
                                   help_text='parameters per method key, e.g. {"rise": {"masks": 200}}')
    start_at = serializers.DateTimeField(required=False, allow_null=True, help_text="queue overnight: start at this time")
    after_current = serializers.BooleanField(default=False)
