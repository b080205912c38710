"""The shape of a metric family: one class per family, registered with ``@register_metric``.

A family declares everything the rest of the project used to decide by ``isinstance`` on the
protocol: the data it needs (the fit check), its explainer runs and model passes per image
(the cost prior), its table columns and which way is better, its per-image runner, its
summary and headline score, and the plots it offers as data the browser draws.

The per-image runner works on an :class:`ImageContext`, which hands out the protocol's
preprocessed input, the explained classes' maps (computed once and shared between
protocols) and the ground truth, so a notebook can run a protocol on a model and a data set
without Django (:func:`experiments.core.metrics.run_protocol`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..imageops import preprocess_pixels
from ..protocols import Preprocessing, Protocol
from .passes import PassGenerator, default_batch_size, drive, drive_one

#: ``(module, normalised B×3×H×W batch, targets) → B×H×W`` maps. An explainer may also have
#: ``top1_map(module, normalised 1×3×H×W input) → (H×W map, class)``: the map of the class its own
#: forward pass ranks first, which spares :class:`ImageContext` a clean pass to name that class.
Explainer = Callable[[torch.nn.Module, torch.Tensor, Sequence[int]], torch.Tensor]

#: What a family may need from a data set: integer labels, per-class boxes/masks, foreground masks.
NEEDS = ("labels", "objects", "foreground")


def model_device(model: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else the device of ``model``'s first parameter (CPU for a plain function)."""
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


@dataclass(frozen=True)
class Cost:
    """Work per image: explainer runs (maps computed), extra model forward passes, and a prior
    for other CPU work in seconds on one core (ROAD's sparse solves)."""

    explainer_runs: float = 1.0
    model_passes: float = 0.0
    cpu_seconds: float = 0.0


class ImageContext:
    """One image of a run as a family's runner sees it.

    ``explainer(module, batch, targets)`` returns ``B×H×W`` maps; ``model`` maps normalised
    inputs to logits. Maps are cached per (input geometry, class), so protocols sharing a
    preprocessing share their maps. Subclasses may override :meth:`maps` (the web run caches
    maps of baselines and enhanced methods its own way). ``batch_size`` is the forward-pass
    batch of the protocol's perturbed inputs (default: the device's, :func:`.passes.default_batch_size`).
    """

    def __init__(self, *, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float], sample: Any = None,
                 image: Any = None, explainer: Explainer | None = None, num_classes: int | None = None,
                 seed: int = 0, index: int = 0, device: torch.device | str | None = None,
                 batch_size: int | None = None):
        self.model, self.mean, self.std = model, tuple(mean), tuple(std)
        self.sample, self.image, self.seed, self.index = sample, image, seed, index
        self._explainer = explainer
        self.num_classes = num_classes
        self.device = device
        self.batch_size = batch_size or default_batch_size(self.model_device())
        self._inputs: dict[Preprocessing, tuple[torch.Tensor, torch.Tensor]] = {}
        self._maps: dict[tuple[Preprocessing, int], torch.Tensor] = {}
        self._top1: dict[Preprocessing, int] = {}

    # -- inputs -------------------------------------------------------------------------------
    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=pixels.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype).view(-1, 1, 1)
        return (pixels - mean) / std

    def inputs(self, prep: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
        """``(3×S×S pixels in [0, 1], normalised 1×3×S×S model input)`` under ``prep``."""
        if prep not in self._inputs:
            pixels = preprocess_pixels(self.image, prep)
            x = self.normalize(pixels)[None]
            if self.device is not None:
                x = x.to(self.device)
            self._inputs[prep] = (pixels, x)
        return self._inputs[prep]

    def pixels(self, prep: Preprocessing) -> torch.Tensor:
        return self.inputs(prep)[0]

    def model_device(self) -> torch.device:
        """Where the model's inputs go: ``device`` if given, else the model's parameters' device."""
        return model_device(self.model, self.device)

    def label(self) -> int:
        label = getattr(self.sample, "label", None)
        key = getattr(self.sample, "key", self.index)
        if label is None:
            raise ValueError(f"image {key} has no ground-truth label")
        if self.num_classes is not None and not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} of image {key} is outside the model's {self.num_classes} classes")
        return int(label)

    def check_class(self, class_id: int) -> None:
        if self.num_classes is not None and not 0 <= class_id < self.num_classes:
            key = getattr(self.sample, "key", self.index)
            raise ValueError(f"class {class_id} of image {key} is outside the model's {self.num_classes} classes")

    def top1(self, prep: Preprocessing) -> int:
        if prep not in self._top1:
            with torch.no_grad():
                self._top1[prep] = int(self.model(self.inputs(prep)[1]).argmax(dim=1)[0])
        return self._top1[prep]

    # -- maps ---------------------------------------------------------------------------------
    def explainer(self) -> Explainer:
        if self._explainer is None:
            raise ValueError("this context was given no explainer")
        return self._explainer

    def explain_batch(self, batch: torch.Tensor, targets: Sequence[int], module: torch.nn.Module | None = None) -> torch.Tensor:
        """Maps of arbitrary (e.g. perturbed) inputs: ``B×H×W`` for ``targets``."""
        return torch.as_tensor(self.explainer()(module if module is not None else self.model, batch, list(targets)))

    def explained_map(self, protocol: Protocol) -> tuple[torch.Tensor, int]:
        """``(S×S map, explained class)`` of the class ``protocol.explain`` names: the ground-truth
        label for ``"target"``, otherwise the clean top-1."""
        target = self.label() if getattr(protocol, "explain", None) == "target" else None
        [(saliency, class_id)] = self.maps(protocol.preprocessing, [target])
        return saliency, class_id

    def maps(self, prep: Preprocessing, targets: Sequence[int | None]) -> list[tuple[torch.Tensor, int]]:
        """``(S×S map, explained class)`` per target (``None`` = the clean top-1, named by the
        explainer's own forward pass where it has ``top1_map``, else by a clean pass)."""
        top1_map = getattr(self._explainer, "top1_map", None)
        if None in targets and prep not in self._top1 and top1_map is not None:
            saliency, class_id = top1_map(self.model, self.inputs(prep)[1])
            self._top1[prep], self._maps[(prep, int(class_id))] = int(class_id), torch.as_tensor(saliency)
        wanted = [self.top1(prep) if t is None else int(t) for t in targets]
        missing = [t for t in dict.fromkeys(wanted) if (prep, t) not in self._maps]
        if missing:
            _, x = self.inputs(prep)
            out = self.explain_batch(x.repeat(len(missing), 1, 1, 1), missing)
            for t, m in zip(missing, out):
                self._maps[(prep, t)] = m
        return [(self._maps[(prep, t)], t) for t in wanted]


class MetricFamily:
    """Base of every metric family; subclasses are registered with ``@register_metric(key)``.

    ``key`` equals the ``metric`` of the family's protocol class, which is stored in the
    database with every protocol: never rename one.
    """

    key: ClassVar[str] = ""
    label: ClassVar[str] = ""
    protocol_class: ClassVar[type[Protocol]]

    # -- declarations -------------------------------------------------------------------------
    def needs(self, protocol: Protocol) -> set[str]:
        """Subset of :data:`NEEDS` the data set must provide (class ids must match the model's)."""
        return {"labels"} if getattr(protocol, "explain", None) == "target" else set()

    def cost(self, protocol: Protocol, *, model_layers: int = 0) -> Cost:
        return Cost()

    def columns(self, protocol: Protocol) -> list[dict]:
        """``[{"key", "label", "better": "higher" | "lower"}, …]`` of the aggregate table."""
        raise NotImplementedError

    def plots(self, protocol: Protocol) -> list[dict]:
        """Plot specifications the browser draws from each table row's ``extras``.

        ``{"kind": "line", "title", "x_label", "y_label", "y_min", "y_max", "series": [{"y": path,
        "x": path | None, "suffix": str, "dashed": bool}]}`` (``x`` ``None``: evenly spaced on
        ``[0, 1]``), or ``{"kind": "bars", "title", "y_label", "groups": path, "values": path}``
        (one bar series per row). A path is dot-separated keys into ``extras``; ``*`` maps over
        a list.
        """
        return []

    # -- running ------------------------------------------------------------------------------
    #: A family implements :meth:`steps` (its model passes can then be pooled across images) or
    #: :meth:`run` (its own passes, or none).
    def steps(self, protocol: Protocol, ctx: ImageContext) -> PassGenerator:
        """One image's work as a pass generator (:mod:`.passes`): yields normalised batches, is
        sent their logits, returns :meth:`run`'s rows."""
        raise NotImplementedError

    def pools_passes(self) -> bool:
        """Whether this family's passes can share batches with other images' (it has :meth:`steps`)."""
        return type(self).steps is not MetricFamily.steps

    def run(self, protocol: Protocol, ctx: ImageContext) -> list[dict]:
        """Rows of one image: ``[{"class_id", "variant", "data", "saliency"}, …]`` (``data`` is JSON)."""
        if not self.pools_passes():
            raise NotImplementedError(f"{type(self).__name__} implements neither run nor steps")
        return drive_one(self.steps(protocol, ctx), ctx.model, batch_size=ctx.batch_size)

    def run_many(self, protocol: Protocol, contexts: Sequence[ImageContext]) -> list[list[dict] | BaseException]:
        """:meth:`run` of several images (one model, one batch size), each one's rows or its
        exception. Families with :meth:`steps` share forward batches across the images."""
        if not contexts:
            return []
        if self.pools_passes():
            first = contexts[0]
            return drive([self.steps(protocol, ctx) for ctx in contexts], first.model, batch_size=first.batch_size)
        results: list[list[dict] | BaseException] = []
        for ctx in contexts:
            try:
                results.append(self.run(protocol, ctx))
            except Exception as error:  # noqa: BLE001 - one image's failure is that image's result
                results.append(error)
        return results

    # -- results ------------------------------------------------------------------------------
    def aggregate(self, protocol: Protocol, records: Iterable[Any], *, class_names: Sequence[str] | None = None) -> dict:
        raise NotImplementedError

    def summarise(self, protocol: Protocol, records: list[Mapping[str, Any]],
                  class_names: Sequence[str] | None = None) -> tuple[dict, dict]:
        """``(values per column key, extras for the plots)`` of one method's stored records."""
        raise NotImplementedError

    def record_score(self, data: Mapping[str, Any]) -> float | None:
        """One headline number for a stored record (the drill-down list), or ``None``."""
        return None


def nanmean(values: Iterable[float]) -> float | None:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None
