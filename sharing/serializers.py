from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from . import registry
from .models import Share


class ShareSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    public_url = serializers.SerializerMethodField()
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = Share
        fields = ["id", "url", "public_url", "token", "view", "object_id", "title", "options", "active",
                  "created_at", "revoked_at"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("sharing:share-detail", args=[obj.pk])

    def get_public_url(self, obj) -> str:
        path = reverse("sharing:public", args=[obj.token])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class ShareCreateSerializer(serializers.Serializer):
    view = serializers.ChoiceField(choices=[], help_text="what to share: 'explanation', 'segmentation', …")
    object_id = serializers.IntegerField(min_value=1)
    options = serializers.DictField(required=False, default=dict)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["view"].choices = registry.view_names()
