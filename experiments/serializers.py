"""Request validation and response shapes of the experiments API."""
from __future__ import annotations

import base64

from django.urls import reverse
from rest_framework import serializers

from . import selectors
from .models import Experiment, Record


class ExperimentCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    model = serializers.IntegerField(help_text="id of a model visible to the user")
    dataset = serializers.JSONField(help_text='{"kind": "voc2007", "paths": {"root": "..."}, '
                                              '"subset": {"mode": "first"|"random"|"all", "n": 100, "seed": 0}}')
    methods = serializers.ListField(child=serializers.JSONField(), min_length=1,
                                    help_text='[{"key": "gradcam", "enhance": true, "params": {...}}, "baseline_random"]')
    protocols = serializers.ListField(child=serializers.JSONField(), min_length=1,
                                      help_text='names ("thesis-v1") or copies {"copy_of", "name", "params"}')
    seed = serializers.IntegerField(default=0)
    shard_size = serializers.IntegerField(required=False, min_value=1, allow_null=True)
    start_at = serializers.DateTimeField(required=False, allow_null=True, help_text="queue overnight: start at this time")
    after_current = serializers.BooleanField(default=False, help_text="start after the current runs have finished")


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
                  "finished_at", "url", "page_url"]

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

    class Meta:
        model = Record
        fields = ["id", "image_index", "image_key", "method_slot", "method_key", "enhance", "protocol", "class_id",
                  "variant", "ok", "error", "seconds", "score", "data", "thumb", "thumb_size"]

    def get_score(self, obj) -> float | None:
        return selectors.record_score(obj)

    def get_thumb(self, obj) -> str | None:
        """The map as base64 of ``thumb_size²`` uint8 values (row-major), or null."""
        return base64.b64encode(bytes(obj.thumb)).decode("ascii") if obj.thumb else None

    def get_thumb_size(self, obj) -> int:
        return Record.THUMB
