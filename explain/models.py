"""Database rows of the explain app: the classifiers users can pick."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class ClassifierModelQuerySet(models.QuerySet):
    def visible_to(self, user) -> "ClassifierModelQuerySet":
        """Built-ins for everyone, plus the user's own uploads."""
        if user is None or not user.is_authenticated:
            return self.filter(owner__isnull=True)
        return self.filter(models.Q(owner__isnull=True) | models.Q(owner=user))


class ClassifierModel(models.Model):
    """A classifier: a built-in (``owner`` is null, weights from the zoo) or a user's upload."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="classifier_models")
    name = models.CharField(max_length=100)
    builtin_key = models.CharField(max_length=50, blank=True, help_text="zoo name of a built-in model")
    architecture = models.CharField(max_length=100, help_text="torchvision or timm architecture name")
    family = models.CharField(max_length=10, choices=[("cnn", "CNN"), ("vit", "ViT")])
    num_classes = models.PositiveIntegerField(default=1000)
    class_names = models.JSONField(default=list, blank=True)
    weights_file = models.FileField(upload_to="weights/", blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    weights_present = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ClassifierModelQuerySet.as_manager()

    class Meta:
        ordering = ["owner_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["builtin_key"], condition=models.Q(owner__isnull=True),
                                    name="unique_builtin_key"),
            models.UniqueConstraint(fields=["owner", "name"], name="unique_model_name_per_owner"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_builtin(self) -> bool:
        return self.owner_id is None
