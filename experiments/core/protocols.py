"""Named, versioned evaluation protocols: frozen parameter sets stored with every result.

Published numbers for the same metric differ mostly because the protocols differ (blur kernel,
step size, substrate, crop or resize), so every score in this project is tied to a protocol
name and its full parameters. The built-in protocols are registered below with
``@register_protocol(name)`` on a factory; a user may copy one and change parameters, and the
copy gets a new name (:func:`copy_protocol`). Names are stored in the database: never rename
a registered protocol, register a new version (``...-v2``) instead.

Example::

    from experiments.core.protocols import get_protocol, copy_protocol
    proto = get_protocol("thesis-v1")               # InsertionDeletionProtocol(step=448, ...)
    mine = copy_protocol("thesis-v1", "my-steps-224", step=224)
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

__all__ = [
    "Preprocessing",
    "Substrate",
    "Protocol",
    "InsertionDeletionProtocol",
    "PerturbationProtocol",
    "PointingProtocol",
    "SegmentationProtocol",
    "SanityProtocol",
    "ComplexityProtocol",
    "RandomLogitProtocol",
    "FaithfulnessCorrelationProtocol",
    "RoadProtocol",
    "InfidelityProtocol",
    "MaxSensitivityProtocol",
    "register_protocol",
    "get_protocol",
    "protocol_names",
    "copy_protocol",
    "protocol_from_dict",
]


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's ``size × size`` input.

    ``resize``: ``"square"`` resizes both sides to ``size`` (no crop, the aspect ratio changes);
    ``"shorter"`` resizes the shorter side to ``resize_to`` and cuts the centre ``size × size``;
    ``"keep-aspect"`` resizes the shorter side to ``size`` and keeps the whole image (the
    longer side becomes ``int(size · long / short)``, as ``torchvision.transforms.Resize(size)``;
    TorchRay's pointing game feeds fully convolutional models this way).
    Interpolation is bilinear with antialiasing (PIL's ``BILINEAR`` filter).
    """

    resize: str = "square"
    size: int = 224
    resize_to: int | None = None

    def __post_init__(self) -> None:
        if self.resize not in ("square", "shorter", "keep-aspect"):
            raise ValueError(f"Preprocessing.resize must be 'square', 'shorter' or 'keep-aspect', not {self.resize!r}")
        if self.size < 1:
            raise ValueError(f"Preprocessing.size must be positive, not {self.size}")
        if self.resize == "shorter" and (self.resize_to is None or self.resize_to < self.size):
            raise ValueError("Preprocessing(resize='shorter') needs resize_to >= size (e.g. resize_to=256, size=224)")
        if self.resize != "shorter" and self.resize_to is not None:
            raise ValueError(f"Preprocessing(resize={self.resize!r}) takes no resize_to; use resize='shorter' to crop")


@dataclass(frozen=True)
class Substrate:
    """What replaces (deletion) or underlies (insertion) the pixels of a causal metric.

    ``kind="blur"``: a Gaussian blur of the image in pixel space ``[0, 1]`` with an odd
    ``kernel`` size and standard deviation ``sigma`` (reflect padding, kernel normalised to
    sum 1, so blurring before or after normalisation gives the same input).
    ``kind="zeros"``: zeros in the model's *normalised* input space, i.e. the per-channel
    dataset mean colour in pixel space (as in RISE's reference code), not black.
    """

    kind: str = "blur"
    kernel: int | None = 51
    sigma: float | None = 50.0

    def __post_init__(self) -> None:
        if self.kind == "blur":
            if self.kernel is None or self.kernel < 1 or self.kernel % 2 == 0:
                raise ValueError(f"a blur substrate needs an odd positive kernel size, not {self.kernel!r}")
            if self.sigma is None or not self.sigma > 0:
                raise ValueError(f"a blur substrate needs sigma > 0, not {self.sigma!r}")
        elif self.kind == "zeros":
            if self.kernel is not None or self.sigma is not None:
                raise ValueError("a 'zeros' substrate takes no kernel or sigma; pass kernel=None, sigma=None")
        else:
            raise ValueError(f"Substrate.kind must be 'blur' or 'zeros', not {self.kind!r}")


def _zeros() -> Substrate:
    return Substrate(kind="zeros", kernel=None, sigma=None)


@dataclass(frozen=True)
class Protocol:
    """Base of every protocol: a name, the metric it parameterises, and frozen parameters.

    Subclasses add their parameters as fields with the published defaults. ``to_dict`` gives
    the JSON-ready form the database stores; ``protocol_from_dict`` rebuilds it.
    """

    name: str
    description: str = ""
    #: The metric family; set by each subclass, used to pick the runner.
    metric: ClassVar[str] = ""

    def params(self) -> dict[str, Any]:
        """Every parameter except the name and description, as plain JSON values."""
        data = dataclasses.asdict(self)
        data.pop("name")
        data.pop("description")
        return _jsonable(data)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "description": self.description, "params": self.params()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class InsertionDeletionProtocol(Protocol):
    """Insertion and deletion (Petsiuk et al., "RISE", BMVC 2018).

    ``step`` pixels (all channels of a pixel at once) change per step, in order of decreasing
    saliency; the softmax probability of the explained class is recorded at every step,
    including both ends; AUC by the trapezoid rule on ``[0, 1]``, ×100.
    """

    metric: ClassVar[str] = "insertion-deletion"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    step: int = 448
    insertion_substrate: Substrate = field(default_factory=Substrate)
    deletion_substrate: Substrate = field(default_factory=Substrate)
    #: The class explained: the clean top-1 prediction.
    explain: str = "predicted"
    #: Upper edges of the clean top-1 probability groups; the last group is ``>= 0.9999``.
    group_edges: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9999)

    def __post_init__(self) -> None:
        if not isinstance(self.step, int) or self.step < 1:
            raise ValueError(f"step must be a positive number of pixels, not {self.step!r}")
        if self.explain not in ("predicted", "target"):
            raise ValueError(f"explain must be 'predicted' or 'target', not {self.explain!r}")
        edges = tuple(self.group_edges)
        if list(edges) != sorted(set(edges)) or not all(0 < e <= 1 for e in edges):
            raise ValueError(f"group_edges must be strictly increasing values in (0, 1], not {edges}")


@dataclass(frozen=True)
class PerturbationProtocol(Protocol):
    """Positive and negative perturbation (Chefer et al., CVPR 2021).

    For each fraction ``p`` the top (positive) or bottom (negative) ``p`` of pixels by
    saliency are set to ``fill`` in pixel space ``[0, 1]``; top-1 accuracy against the
    ground-truth label at every ``p``; AUC by the trapezoid rule over ``fractions``, ×100.
    """

    metric: ClassVar[str] = "perturbation"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    fractions: tuple[float, ...] = tuple(i / 10 for i in range(10))
    fill: float = 0.0
    explain: tuple[str, ...] = ("predicted", "target")

    def __post_init__(self) -> None:
        f = tuple(self.fractions)
        if len(f) < 2 or f[0] != 0 or list(f) != sorted(set(f)) or f[-1] >= 1:
            raise ValueError(f"fractions must start at 0, increase strictly and stay below 1, not {f}")
        if not set(self.explain) <= {"predicted", "target"} or not self.explain:
            raise ValueError(f"explain must be a non-empty subset of ('predicted', 'target'), not {self.explain!r}")


@dataclass(frozen=True)
class PointingProtocol(Protocol):
    """The pointing game (Zhang et al., IJCV 2018, as implemented in TorchRay).

    ``score="max"``: a hit if the first maximum of the map (resized to the original image)
    lies strictly within ``tolerance`` pixels of a ground-truth pixel of the class.
    ``score="top-k"``: the fraction of the ``top_k`` highest-valued pixels that do.
    """

    metric: ClassVar[str] = "pointing"
    #: TorchRay: shorter side 224, whole image (no crop), so the map covers the whole photo.
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing("keep-aspect", 224))
    tolerance: int = 15
    score: str = "max"
    top_k: int | None = None
    #: Skip an (image, class) pair when every box of that class in the image is "difficult".
    skip_all_difficult: bool = True
    #: Interpolation used to bring the map to the original image size.
    resize_mode: str = "bilinear"

    def __post_init__(self) -> None:
        if self.score not in ("max", "top-k"):
            raise ValueError(f"score must be 'max' or 'top-k', not {self.score!r}")
        if self.score == "top-k" and (self.top_k is None or self.top_k < 1):
            raise ValueError("score='top-k' needs a positive top_k (e.g. 100)")
        if self.score == "max" and self.top_k is not None:
            raise ValueError("score='max' takes no top_k; use score='top-k'")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 pixels, not {self.tolerance}")
        if self.resize_mode not in ("bilinear", "nearest"):
            raise ValueError(f"resize_mode must be 'bilinear' or 'nearest', not {self.resize_mode!r}")


@dataclass(frozen=True)
class SegmentationProtocol(Protocol):
    """Weakly supervised segmentation on ImageNet-Segmentation (Chefer et al., CVPR 2021).

    The map is min–max normalised; foreground = values strictly above the map's mean.
    Pixel accuracy and per-class IoU are pooled over the data set; mAP is the per-image
    average precision of the soft scores ``[1 − map, map]`` against the one-hot mask.
    """

    metric: ClassVar[str] = "segmentation"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    threshold: str = "mean"
    explain: str = "predicted"

    def __post_init__(self) -> None:
        if self.threshold != "mean":
            raise ValueError(f"only threshold='mean' is implemented, not {self.threshold!r}")
        if self.explain not in ("predicted", "target"):
            raise ValueError(f"explain must be 'predicted' or 'target', not {self.explain!r}")


@dataclass(frozen=True)
class SanityProtocol(Protocol):
    """Model-parameter randomisation tests (Adebayo et al., "Sanity checks", NeurIPS 2018).

    ``modes``: ``"cascading"`` re-initialises layers from the output backwards, one more per
    step; ``"independent"`` re-initialises one layer at a time. A *layer* is a module that
    owns parameters directly, excluding normalisation layers (see
    :func:`experiments.core.metrics.sanity.randomizable_layers`).
    """

    metric: ClassVar[str] = "sanity"
    preprocessing: Preprocessing = field(default_factory=lambda: Preprocessing("shorter", 224, 256))
    modes: tuple[str, ...] = ("cascading", "independent")
    ssim_sigma: float = 1.5
    hog_cell: int = 16
    hog_orientations: int = 9
    hog_block: int = 2
    #: How a layer is re-initialised: its own ``reset_parameters()`` under a seeded generator.
    reinit: str = "reset_parameters"
    explain: str = "predicted"

    def __post_init__(self) -> None:
        if not self.modes or not set(self.modes) <= {"cascading", "independent"}:
            raise ValueError(f"modes must be a non-empty subset of ('cascading', 'independent'), not {self.modes!r}")
        if self.hog_cell < 2:
            raise ValueError(f"hog_cell must be at least 2 pixels, not {self.hog_cell}")
        if self.reinit != "reset_parameters":
            raise ValueError(f"only reinit='reset_parameters' is implemented, not {self.reinit!r}")


@dataclass(frozen=True)
class ComplexityProtocol(Protocol):
    """Sparseness and complexity of the map alone (no model passes).

    Gini index of ``|map|`` (Chalasani et al., ICML 2020) and the entropy of its fractional
    contributions (Bhatt et al., IJCAI 2020); see :mod:`experiments.core.metrics.complexity`.
    """

    metric: ClassVar[str] = "complexity"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    explain: str = "predicted"

    def __post_init__(self) -> None:
        if self.explain not in ("predicted", "target"):
            raise ValueError(f"explain must be 'predicted' or 'target', not {self.explain!r}")


@dataclass(frozen=True)
class RandomLogitProtocol(Protocol):
    """Random-logit test (Sixt et al., ICML 2020): the map of a random other class should differ.

    The other class is drawn uniformly from the model's classes except the explained one, by
    a generator seeded with the run's seed and the image index; the two maps are compared by
    Spearman rank correlation and SSIM; see :mod:`experiments.core.metrics.random_logit`.
    """

    metric: ClassVar[str] = "random-logit"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    ssim_sigma: float = 1.5
    explain: str = "predicted"

    def __post_init__(self) -> None:
        if self.explain not in ("predicted", "target"):
            raise ValueError(f"explain must be 'predicted' or 'target', not {self.explain!r}")
        if not self.ssim_sigma > 0:
            raise ValueError(f"ssim_sigma must be positive, not {self.ssim_sigma!r}")


@dataclass(frozen=True)
class FaithfulnessCorrelationProtocol(Protocol):
    """Faithfulness correlation (Bhatt et al., IJCAI 2020): ``runs`` random subsets of ``subset``
    pixels set to ``fill`` in pixel space; Pearson correlation of the subsets' saliency sums
    with the drops of the explained class's logit. See :mod:`experiments.core.metrics.faithfulness`.
    """

    metric: ClassVar[str] = "faithfulness-correlation"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    runs: int = 100
    subset: int = 224
    fill: float = 0.0
    explain: str = "predicted"

    def __post_init__(self) -> None:
        if not isinstance(self.runs, int) or self.runs < 2:
            raise ValueError(f"runs must be an integer of at least 2, not {self.runs!r}")
        if not isinstance(self.subset, int) or not 1 <= self.subset < self.preprocessing.size ** 2:
            raise ValueError(f"subset must be a number of pixels between 1 and the image's, not {self.subset!r}")
        if self.explain not in ("predicted", "target"):
            raise ValueError(f"explain must be 'predicted' or 'target', not {self.explain!r}")


@dataclass(frozen=True)
class RoadProtocol(Protocol):
    """ROAD (Rong et al., ICML 2022): the most (MoRF) or least (LeRF) relevant ``p`` of pixels
    replaced by a noisy linear imputation (neighbour means, then Gaussian noise of std ``noise``
    in pixel space); top-1 accuracy against ``reference`` at every ``p``. See
    :mod:`experiments.core.metrics.road`.
    """

    metric: ClassVar[str] = "road"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    #: The authors' no-retraining fractions.
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
    noise: float = 0.01
    #: Accuracy against the ground-truth ``"label"`` (the paper) or the clean top-1 ``"prediction"``.
    reference: str = "label"
    explain: str = "predicted"

    def __post_init__(self) -> None:
        f = tuple(self.fractions)
        if not f or list(f) != sorted(set(f)) or not all(0 < v < 1 for v in f):
            raise ValueError(f"fractions must increase strictly inside (0, 1), not {f}")
        if not isinstance(self.noise, (int, float)) or not self.noise >= 0:
            raise ValueError(f"noise must be a standard deviation >= 0, not {self.noise!r}")
        if self.reference not in ("label", "prediction"):
            raise ValueError(f"reference must be 'label' or 'prediction', not {self.reference!r}")
        if self.explain not in ("predicted", "target"):
            raise ValueError(f"explain must be 'predicted' or 'target', not {self.explain!r}")


@dataclass(frozen=True)
class InfidelityProtocol(Protocol):
    """Infidelity (Yeh et al., NeurIPS 2019): ``samples`` Gaussian perturbations ``I`` of std
    ``sigma`` in pixel space; the mean squared gap between ``Iᵀ·map`` and the drop of the
    explained class's logit, after the paper's optimal scaling of the map (``scaling="optimal"``)
    or without it (``"none"``). ``noise``: the draws' precision, ``"float64"`` (numpy's
    generator; ``yeh-infidelity-v1``) or ``"float32"`` (torch's generator, float32 end to end;
    ``yeh-infidelity-v2``). See :mod:`experiments.core.metrics.infidelity`.
    """

    metric: ClassVar[str] = "infidelity"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    samples: int = 10
    sigma: float = 0.1
    scaling: str = "optimal"
    explain: str = "predicted"
    #: The default keeps ``yeh-infidelity-v1`` and stored copies of it (which lack the field) as they were.
    noise: str = "float64"

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be a positive integer, not {self.samples!r}")
        if not isinstance(self.sigma, (int, float)) or not self.sigma > 0:
            raise ValueError(f"sigma must be a positive standard deviation, not {self.sigma!r}")
        if self.scaling not in ("optimal", "none"):
            raise ValueError(f"scaling must be 'optimal' or 'none', not {self.scaling!r}")
        if self.explain not in ("predicted", "target"):
            raise ValueError(f"explain must be 'predicted' or 'target', not {self.explain!r}")
        if self.noise not in ("float64", "float32"):
            raise ValueError(f"noise must be 'float64' or 'float32', not {self.noise!r}")


@dataclass(frozen=True)
class MaxSensitivityProtocol(Protocol):
    """Max-sensitivity (Yeh et al., NeurIPS 2019): ``samples`` inputs drawn uniformly from the
    L∞ ball of ``radius`` around the image (pixel space), each explained again by the method;
    the largest ``‖map(x') − map(x)‖ / ‖map(x)‖``. See :mod:`experiments.core.metrics.sensitivity`.
    """

    metric: ClassVar[str] = "max-sensitivity"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    samples: int = 5
    radius: float = 0.02
    explain: str = "predicted"

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be a positive integer, not {self.samples!r}")
        if not isinstance(self.radius, (int, float)) or not self.radius > 0:
            raise ValueError(f"radius must be positive, not {self.radius!r}")
        if self.explain not in ("predicted", "target"):
            raise ValueError(f"explain must be 'predicted' or 'target', not {self.explain!r}")


# --------------------------------------------------------------------------- registry

_PROTOCOLS: dict[str, Protocol] = {}
_CLASSES: dict[str, type[Protocol]] = {
    cls.metric: cls
    for cls in (InsertionDeletionProtocol, PerturbationProtocol, PointingProtocol, SegmentationProtocol, SanityProtocol,
                ComplexityProtocol, RandomLogitProtocol, FaithfulnessCorrelationProtocol, RoadProtocol,
                InfidelityProtocol, MaxSensitivityProtocol)
}
_lock = threading.RLock()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or name != name.strip() or len(name) > 100:
        raise ValueError(f"a protocol name must be a non-empty string of at most 100 characters without surrounding spaces, not {name!r}")


def register_protocol(name: str) -> Callable[[Callable[[], Protocol]], Callable[[], Protocol]]:
    """Decorator registering the protocol a zero-argument factory returns under ``name``.

    The factory may leave ``name`` empty; it is set to ``name``. A name already taken raises
    ``ValueError``. Returns the factory unchanged.
    """
    _check_name(name)

    def decorate(factory: Callable[[], Protocol]) -> Callable[[], Protocol]:
        protocol = factory()
        if not isinstance(protocol, Protocol):
            raise TypeError(f"@register_protocol({name!r}) needs a factory returning a Protocol, got {type(protocol).__name__}")
        if protocol.name not in ("", name):
            raise ValueError(f"factory for {name!r} returned a protocol named {protocol.name!r}")
        protocol = dataclasses.replace(protocol, name=name)
        with _lock:
            if name in _PROTOCOLS:
                raise ValueError(f"protocol {name!r} is already registered; register a new version such as {name}-v2 instead")
            _PROTOCOLS[name] = protocol
        return factory

    return decorate


def get_protocol(name: str) -> Protocol:
    """The registered protocol called ``name``."""
    try:
        return _PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {protocol_names()}") from None


def protocol_names(metric: str | None = None) -> list[str]:
    """Registered protocol names (for one metric family if given), sorted."""
    return sorted(n for n, p in _PROTOCOLS.items() if metric is None or p.metric == metric)


def copy_protocol(source: str | Protocol, new_name: str, **changes: Any) -> Protocol:
    """A new protocol equal to ``source`` with ``changes`` applied and named ``new_name``.

    The copy is not registered (user copies live in the database). ``new_name`` must differ
    from every registered name. Nested parameters may be given as dicts, e.g.
    ``insertion_substrate={"kind": "blur", "kernel": 11, "sigma": 5}``.
    """
    _check_name(new_name)
    base = get_protocol(source) if isinstance(source, str) else source
    if new_name in _PROTOCOLS:
        raise ValueError(f"{new_name!r} is a built-in protocol name; choose another name for the copy")
    names = {f.name for f in dataclasses.fields(base)} - {"name"}
    unknown = set(changes) - names
    if unknown:
        raise ValueError(f"{type(base).__name__} has no parameter(s) {sorted(unknown)}; it has {sorted(names)}")
    return dataclasses.replace(base, name=new_name, **_coerce(type(base), changes))


def _coerce(cls: type[Protocol], values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn JSON values (dicts, lists) back into the field types of ``cls``."""
    out: dict[str, Any] = {}
    defaults = cls(name="_")
    for key, value in values.items():
        current = getattr(defaults, key, None)
        if isinstance(current, (Preprocessing, Substrate)) and isinstance(value, Mapping):
            value = type(current)(**value)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def protocol_from_dict(data: Mapping[str, Any]) -> Protocol:
    """Rebuild a protocol from :meth:`Protocol.to_dict` output (e.g. a user's stored copy)."""
    try:
        cls = _CLASSES[data["metric"]]
    except KeyError:
        raise ValueError(f"protocol data needs 'metric' in {sorted(_CLASSES)}, got {data.get('metric')!r}") from None
    params = dict(data.get("params", {}))
    known = {f.name for f in dataclasses.fields(cls)} - {"name", "description"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {sorted(unknown)}")
    return cls(name=data["name"], description=data.get("description", ""), **_coerce(cls, params))


# --------------------------------------------------------------------------- built-ins

@register_protocol("thesis-v1")
def _thesis_v1() -> Protocol:
    return InsertionDeletionProtocol(
        name="thesis-v1",
        description="Insertion/deletion as in the thesis: 224×224 resize, 448 px per step, blur k=51 σ=50 both ways.",
        preprocessing=Preprocessing("square", 224),
        step=448,
        insertion_substrate=Substrate("blur", 51, 50.0),
        deletion_substrate=Substrate("blur", 51, 50.0),
    )


@register_protocol("rise-v1")
def _rise_v1() -> Protocol:
    return InsertionDeletionProtocol(
        name="rise-v1",
        description="RISE (Petsiuk et al. 2018): 224×224 resize, 224 px per step, insertion from blur k=11 σ=5, deletion to zeros (normalised space).",
        preprocessing=Preprocessing("square", 224),
        step=224,
        insertion_substrate=Substrate("blur", 11, 5.0),
        deletion_substrate=_zeros(),
    )


@register_protocol("groupcam-v1")
def _groupcam_v1() -> Protocol:
    return InsertionDeletionProtocol(
        name="groupcam-v1",
        description="Group-CAM (Zhang et al. 2021): resize 256, centre-crop 224, 448 px per step, insertion from blur k=51 σ=50, deletion to zeros (normalised space).",
        preprocessing=Preprocessing("shorter", 224, 256),
        step=448,
        insertion_substrate=Substrate("blur", 51, 50.0),
        deletion_substrate=_zeros(),
    )


@register_protocol("chefer-perturbation-v1")
def _chefer_perturbation_v1() -> Protocol:
    return PerturbationProtocol(
        name="chefer-perturbation-v1",
        description="Positive/negative perturbation (Chefer et al. 2021): 224×224 resize, p = 0..90 % by 10, removed pixels set to 0 in [0, 1].",
    )


@register_protocol("torchray-pointing-v1")
def _torchray_pointing_v1() -> Protocol:
    return PointingProtocol(
        name="torchray-pointing-v1",
        description="Pointing game as in TorchRay: first maximum of the map at original size, hit if within 15 px (strictly) of the class's ground truth.",
    )


@register_protocol("thesis-pointing-top100-v1")
def _thesis_pointing_top100_v1() -> Protocol:
    return PointingProtocol(
        name="thesis-pointing-top100-v1",
        description="Fraction of the 100 highest-valued pixels within 15 px (strictly) of the class's ground truth.",
        score="top-k",
        top_k=100,
    )


@register_protocol("chefer-segmentation-v1")
def _chefer_segmentation_v1() -> Protocol:
    return SegmentationProtocol(
        name="chefer-segmentation-v1",
        description="ImageNet-Segmentation (Chefer et al. 2021): 224×224, min-max map, foreground above its mean; pooled pixel accuracy and IoU, per-image mAP.",
    )


@register_protocol("adebayo-v1")
def _adebayo_v1() -> Protocol:
    return SanityProtocol(
        name="adebayo-v1",
        description="Sanity checks (Adebayo et al. 2018): cascading and independent randomisation; Spearman (|map|, signed), SSIM, HOG Spearman.",
    )


@register_protocol("complexity-v1")
def _complexity_v1() -> Protocol:
    return ComplexityProtocol(
        name="complexity-v1",
        description="Sparseness (Gini index of |map|, Chalasani et al. 2020) and complexity (entropy of |map|'s fractional contributions, Bhatt et al. 2020) of the predicted class's map at 224×224; no model passes.",
    )


@register_protocol("random-logit-v1")
def _random_logit_v1() -> Protocol:
    return RandomLogitProtocol(
        name="random-logit-v1",
        description="Random-logit test (Sixt et al. 2020): the predicted class's map against the map of a random other class at 224×224; Spearman and SSIM (lower: the map depends on the class).",
    )


@register_protocol("bhatt-faithfulness-v1")
def _bhatt_faithfulness_v1() -> Protocol:
    return FaithfulnessCorrelationProtocol(
        name="bhatt-faithfulness-v1",
        description="Faithfulness correlation (Bhatt et al. 2020): 100 random subsets of 224 pixels set to black at 224×224; Pearson correlation of saliency sums with logit drops.",
    )


@register_protocol("road-v1")
def _road_v1() -> Protocol:
    return RoadProtocol(
        name="road-v1",
        description="ROAD (Rong et al. 2022): 224×224, the most (MoRF) / least (LeRF) relevant 10–50, 70, 90 % of pixels replaced by noisy linear imputation (σ = 0.01); top-1 accuracy against the label.",
    )


@register_protocol("yeh-infidelity-v1")
def _yeh_infidelity_v1() -> Protocol:
    return InfidelityProtocol(
        name="yeh-infidelity-v1",
        description="Infidelity (Yeh et al. 2019): 224×224, 10 Gaussian perturbations (σ = 0.1 in pixel space) of the predicted class's logit, map optimally scaled as in the paper; lower is better.",
    )


@register_protocol("yeh-infidelity-v2")
def _yeh_infidelity_v2() -> Protocol:
    return InfidelityProtocol(
        name="yeh-infidelity-v2",
        description="Infidelity (Yeh et al. 2019) as yeh-infidelity-v1 but with float32 noise draws (torch's generator, float32 end to end): 224×224, 10 Gaussian perturbations (σ = 0.1 in pixel space) of the predicted class's logit, map optimally scaled as in the paper; lower is better.",
        noise="float32",
    )


@register_protocol("yeh-max-sensitivity-v1")
def _yeh_max_sensitivity_v1() -> Protocol:
    return MaxSensitivityProtocol(
        name="yeh-max-sensitivity-v1",
        description="Max-sensitivity (Yeh et al. 2019): 224×224, 5 inputs uniform in the L∞ ball of radius 0.02 (pixel space) re-explained by the method; largest relative change of the map (Frobenius norm); lower is better.",
    )
