"""Read-only links to anything a user owns: an explanation set, a segmentation view, an experiment.

A share points at its object generically (content type + object id), so any app can make
its objects shareable by registering a renderer in :mod:`sharing.registry`.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models


class ShareQuerySet(models.QuerySet):
    def active(self) -> "ShareQuerySet":
        return self.filter(revoked_at__isnull=True)

    def owned_by(self, user) -> "ShareQuerySet":
        return self.filter(owner=user)


class Share(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shares")
    token = models.CharField(max_length=64, unique=True, help_text="unguessable URL token (256 random bits)")
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveBigIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    view = models.CharField(max_length=30, help_text="how the object is shown, e.g. 'explanation', 'segmentation'")
    title = models.CharField(max_length=200, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="view options, e.g. the segmentation ratio")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ShareQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["content_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.view} share {self.token[:8]}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
