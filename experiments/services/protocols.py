"""A run's protocols: read from a request, and checked against the data set and the model before anything is queued."""
from __future__ import annotations

from typing import Any, Mapping

from explain.models import ClassifierModel
from saliency_site.errors import InputError

from ..core import datasets as ds
from ..core import metrics
from ..core.protocols import Protocol, copy_protocol, get_protocol, protocol_from_dict
from .datasets import DatasetKind


def protocol_read(raw: str | Mapping[str, Any]) -> Protocol:
    """A built-in by name, a copy ``{"copy_of", "name", "params"}``, or a full ``to_dict()``."""
    if isinstance(raw, str):
        return get_protocol(raw)
    if not isinstance(raw, Mapping):
        raise InputError("each protocol is a name or an object")
    if "copy_of" in raw:
        return copy_protocol(str(raw["copy_of"]), str(raw.get("name", "")), **dict(raw.get("params") or {}))
    return protocol_from_dict(raw)


def check_protocol_fits(protocol: Protocol, kind: DatasetKind, dataset: ds.Dataset, model: ClassifierModel) -> None:
    prep = getattr(protocol, "preprocessing", None)
    if model.family == "vit" and prep is not None and prep.resize == "keep-aspect":
        # refused here, not image by image: the run would finish "done" with every record failed
        side = (model.preprocessing or {}).get("input_size", 224)
        raise InputError(
            f"{protocol.name} resizes each image keeping its aspect ratio (shorter side {prep.size}, nothing "
            f"cropped), so the model gets non-square inputs, but {model.name} is a ViT, which takes square "
            f"{side}×{side} inputs only; choose a CNN, or a copy of the protocol with square preprocessing "
            f"(params {{\"preprocessing\": {{\"resize\": \"square\", \"size\": {side}}}}})")
    needs = metrics.get_family(protocol.metric).needs(protocol)
    same_classes = dataset.num_classes == model.num_classes
    if "objects" in needs:
        if not kind.objects:
            raise InputError(f"{protocol.name} needs boxes or masks per class; {kind.label} has none")
        if not same_classes:
            raise InputError(f"{protocol.name} explains the ground-truth classes of {kind.label} "
                             f"({dataset.num_classes} classes) but {model.name} has {model.num_classes}; "
                             "use a model fine-tuned on this data set's classes")
    if "foreground" in needs and not kind.foreground:
        raise InputError(f"{protocol.name} needs foreground masks; {kind.label} has none")
    if "labels" in needs:
        if not kind.labels:
            raise InputError(f"{protocol.name} measures against ground-truth labels; {kind.label} has none")
        if not same_classes:
            raise InputError(f"{protocol.name} compares predictions with {kind.label}'s labels "
                             f"({dataset.num_classes} classes) but {model.name} has {model.num_classes}")
