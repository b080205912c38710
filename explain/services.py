"""Writes and side effects of the explain app."""
from __future__ import annotations

from django.db import transaction

from .core import zoo
from .models import ClassifierModel


@transaction.atomic
def builtin_models_sync() -> list[ClassifierModel]:
    """Create or update one row per built-in model, with whether its weights are on this machine."""
    rows = []
    for name, spec in zoo.BUILTIN_MODELS.items():
        path = zoo.weights_file(name)
        row, _ = ClassifierModel.objects.update_or_create(
            owner=None,
            builtin_key=name,
            defaults={
                "name": spec.label,
                "architecture": name,
                "family": spec.family,
                "num_classes": 1000,
                "class_names": list(zoo.imagenet_class_names()),
                "weights_present": path is not None,
                "weights_sha256": zoo.sha256_of(path) if path is not None else "",
            },
        )
        rows.append(row)
    return rows
