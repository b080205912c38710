"""How long a run will take: measured per-image costs on this site where there are some, priors otherwise."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from explain.models import ClassifierModel

from ..core import metrics
from ..core.protocols import Protocol, protocol_from_dict
from ..models import Record


#: Seconds per image on one CPU core for EfficientNet-Lite0 at 224×224, used until this site
#: has measured the method itself (then the measurements win).
METHOD_PRIOR_SECONDS: dict[str, float] = {
    "gradcam": 0.15, "gradcampp": 0.15, "xgradcam": 0.15, "layercam": 0.15, "scorecam": 12.0,
    "groupcam": 1.0, "cameras": 15.0, "msgcam": 4.0, "rise": 20.0, "lrp": 0.6,
    "transformer_attribution": 1.0, "partial_lrp": 1.0, "attention_rollout": 0.3, "gradient_rollout": 0.5,
}
FORWARD_PRIOR_SECONDS = 0.02
ENHANCE_FACTOR = 26          # the default enhancement explains 25 windows plus the full image


def _prior_seconds(entry: Mapping[str, Any], protocol: Protocol, model: ClassifierModel) -> float:
    if entry.get("baseline"):
        map_cost = FORWARD_PRIOR_SECONDS
    else:
        map_cost = METHOD_PRIOR_SECONDS.get(entry["key"], 1.0) * (ENHANCE_FACTOR if entry.get("enhance") else 1)
    cost = metrics.get_family(protocol.metric).cost(protocol, model_layers=len(model.layers or []))
    return cost.explainer_runs * map_cost + cost.model_passes * FORWARD_PRIOR_SECONDS + cost.cpu_seconds


def _measured_seconds(model: ClassifierModel, entry: Mapping[str, Any], protocol_name: str) -> tuple[float, int] | None:
    """Mean seconds per image of recent successful records with this model, method and protocol."""
    rows = list(
        Record.objects.filter(experiment__model=model, method_key=entry["key"], enhance=bool(entry.get("enhance")),
                              protocol=protocol_name, ok=True)
        .order_by("-id").values_list("experiment_id", "image_index", "seconds")[:400]
    )
    if not rows:
        return None
    per_image: dict[tuple[int, int], float] = {}
    for experiment_id, image_index, seconds in rows:
        per_image[(experiment_id, image_index)] = per_image.get((experiment_id, image_index), 0.0) + seconds
    return float(np.mean(list(per_image.values()))), len(per_image)


def experiment_estimate(*, model: ClassifierModel, methods: Sequence[Mapping[str, Any]],
                        protocols: Sequence[Mapping[str, Any]], num_images: int) -> tuple[float, dict]:
    """Estimated seconds for the run on one worker, and the per-image basis of the estimate."""
    basis: dict[str, dict] = {}
    per_image = 0.0
    for entry in methods:
        for pdata in protocols:
            protocol = protocol_from_dict(pdata)
            measured = _measured_seconds(model, entry, protocol.name)
            if measured is not None:
                seconds, n = measured
                source = f"measured on {n} images"
            else:
                seconds, source = _prior_seconds(entry, protocol, model), "prior (not measured here yet)"
            cost = metrics.get_family(protocol.metric).cost(protocol, model_layers=len(model.layers or []))
            basis[f"{entry['slot']}|{protocol.name}"] = {
                "seconds_per_image": seconds, "source": source,
                # what one image costs besides its map, whatever the seconds came from
                "explainer_runs_per_image": cost.explainer_runs, "model_passes_per_image": cost.model_passes,
                "cpu_seconds_per_image": cost.cpu_seconds}
            per_image += seconds
    return per_image * num_images, basis
