"""The contract every saliency method implements, and the shared base of the gradient CAM family.

A method is one class in one file of this package, registered under a stable key::

    from explain.core.methods.base import CamMethod
    from explain.core.registry import register_method

    @register_method("gradcam")
    class GradCam(CamMethod):
        def weights(self, activations, gradients):       # B×K×h×w each
            return gradients.mean(dim=(2, 3))             # B×K

The engine (:func:`explain.core.engine.explain`) validates the parameters, picks the target
classes, calls :meth:`Method.attribute` once for the whole batch and upsamples the raw map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import Tensor

from explain.core.handle import LAYER_ROLES, Classifier
from explain.core.hooks import capture_layer
from explain.core.ops import chunks

PARAM_KINDS = ("int", "float", "bool", "choice", "layer", "ints")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One user-settable parameter of a method.

    ``kind`` is one of ``int``, ``float``, ``bool``, ``choice``, ``layer`` (a sub-module name of
    the classifier) or ``ints`` (a tuple of ints). For ``layer`` parameters a ``default`` of
    ``None`` means "the classifier's default layer for ``role``"; a ``role`` of ``None`` means
    "cam" for CNNs and "tokens" for ViTs. Other parameters with a ``default`` of ``None`` take
    ``default_for(classifier)`` (e.g. a batch size that suits the classifier's device).
    """

    name: str
    kind: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    help: str = ""
    role: str | None = None
    default_for: Callable[[Classifier], Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"Param {self.name!r}: kind must be one of {PARAM_KINDS}, not {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"Param {self.name!r}: a 'choice' parameter needs choices")
        if self.role is not None and self.role not in LAYER_ROLES:
            raise ValueError(f"Param {self.name!r}: role must be one of {LAYER_ROLES}, not {self.role!r}")

    # -- validation -----------------------------------------------------------------------
    def validate(self, value: Any) -> Any:
        """Coerce ``value`` (possibly a string from a form or the command line) to this kind.

        Raises ``ValueError`` naming the parameter, the value and what is accepted.
        Layer names are only checked for type here; :meth:`Method.resolve_params` checks
        that the classifier has them.
        """
        kind = self.kind
        try:
            if kind == "int":
                out = self._int(value)
                self._check_range(out)
            elif kind == "float":
                if isinstance(value, bool):
                    raise ValueError("a boolean is not a number")
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError("not a finite number")
                self._check_range(out)
            elif kind == "bool":
                if isinstance(value, bool):
                    out = value
                elif isinstance(value, int) and value in (0, 1):
                    out = bool(value)
                elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                    out = value.strip().lower() in _TRUE
                else:
                    raise ValueError("expected true/false")
            elif kind == "choice":
                out = value
                if out not in self.choices:
                    # forms send strings: accept the string spelling of a non-string choice
                    matches = [c for c in self.choices if str(c) == str(value)]
                    if not matches:
                        raise ValueError(f"expected one of {list(self.choices)}")
                    out = matches[0]
            elif kind == "layer":
                if value is None:
                    return None
                if not isinstance(value, str) or not value:
                    raise ValueError("expected a layer name (a string)")
                out = value
            else:  # ints
                if isinstance(value, str):
                    parts = [p for p in value.replace(";", ",").replace(" ", ",").split(",") if p]
                else:
                    parts = list(value)
                if not parts:
                    raise ValueError("expected at least one integer")
                out = tuple(self._int(p) for p in parts)
                for item in out:
                    self._check_range(item)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"parameter {self.name!r}: invalid value {value!r}: {exc}") from None
        return out

    @staticmethod
    def _int(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("a boolean is not an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("expected an integer")
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        if isinstance(value, int):
            return int(value)
        raise ValueError("expected an integer")

    def _check_range(self, value: float) -> None:
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be <= {self.maximum}")

    def to_schema(self) -> dict:
        """A JSON-able description the web forms are generated from."""
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {
            "name": self.name,
            "kind": self.kind,
            "default": default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": list(self.choices),
            "help": self.help,
            "role": self.role,
        }


def _layer_role(param: Param, classifier: Classifier) -> str:
    if param.role is not None:
        return param.role
    return "tokens" if classifier.family == "vit" else "cam"


#: The families of methods the pages group them by, in the order they are shown: a method
#: names one in its ``group``.
METHOD_GROUPS: dict[str, str] = {
    "cam": "Class activation maps (CAM)",
    "perturbation": "Perturbation",
    "propagation": "Relevance propagation (LRP)",
    "transformer": "Transformer attention",
    "": "Other methods",
}


class Method:
    """A saliency method: ``attribute`` turns a batch and its target classes into raw maps.

    Subclasses set the class variables and implement :meth:`attribute`. A method never changes
    the classifier (parameters, gradients, training flag) and leaves no hook behind; use
    :func:`explain.core.hooks.capture_layer` or :class:`explain.core.hooks.HookSession`.
    """

    key: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()       # filled in by register_method
    label: ClassVar[str] = ""
    families: ClassVar[frozenset[str]] = frozenset({"cnn"})
    group: ClassVar[str] = ""                       # a key of METHOD_GROUPS
    params: ClassVar[tuple[Param, ...]] = ()
    uses_gradients: ClassVar[bool] = False
    #: ``attribute`` accepts a batch of many images with different targets (the enhancement
    #: sends all windows in one call when this is true, one window per call otherwise).
    batchable: ClassVar[bool] = True
    #: The method runs many plain passes, so folding the batch norms of a model that allows it
    #: (``Classifier.fold_batch_norms``) pays for its set-up (explain.core.folding).
    folds_batch_norms: ClassVar[bool] = False
    #: The method's own rules fold the batch norms into the convolutions (LRP's canonizer), so
    #: its passes run as on a folded model although the engine does not fold for it.
    folds_batch_norms_in_rules: ClassVar[bool] = False

    #: The method feeds the model images of other sizes than its own (multi-scale methods): not
    #: for models whose input size is fixed (timm's Swin and others with a strict patch grid).
    resizes_inputs: ClassVar[bool] = False

    @classmethod
    def unsupported_reason(cls, classifier: Classifier) -> str | None:
        """Why the method cannot explain ``classifier`` (``None``: it can). Checked by the engine,
        listed by the site (the method greyed out with this reason)."""
        if classifier.family not in cls.families:
            return f"supports {' and '.join(sorted(cls.families)).upper()} models only; {classifier.name} is a {classifier.family.upper()}"
        if cls.resizes_inputs and fixed_input_size(classifier):
            return f"feeds the model several input sizes; {classifier.name} takes {classifier.input_size}×{classifier.input_size} only"
        return None

    def attribute(
        self,
        classifier: Classifier,
        inputs: Tensor,
        targets: Tensor,
        params: Mapping[str, Any],
        generator: torch.Generator | None,
    ) -> Tensor:
        """Raw saliency maps.

        Args:
            classifier: the model and what the methods need to know about it.
            inputs: normalised batch ``B×3×H×W`` on ``classifier.device`` (``H = W`` for ViTs).
            targets: ``LongTensor[B]``, the class explained for each image.
            params: the output of :meth:`resolve_params` (defaults filled, layers resolved).
            generator: a seeded CPU ``torch.Generator`` for random methods, or ``None``.

        Returns:
            ``B×H×W`` or ``B×h×w`` float tensor; the engine upsamples bilinearly to ``H×W``
            and clamps to non-negative finite values.
        """
        raise NotImplementedError

    def explain_batch(
        self,
        classifier: Classifier,
        inputs: Tensor,
        targets: Tensor | None,
        params: Mapping[str, Any],
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(maps, logits, targets)`` for a batch; ``targets=None`` explains each top-1 class.

        The engine calls this. The default runs one prediction pass, then :meth:`attribute`;
        methods whose own passes already yield the logits of ``inputs`` override it to save
        that pass (the gradient CAM family does).
        """
        with torch.no_grad():
            logits = classifier.module(cpu_channels_last(inputs)).float()
        if targets is None:
            targets = logits.argmax(dim=1)
        maps = self.attribute(classifier, inputs, targets, params, generator)
        return maps, logits, targets

    # -- parameters -----------------------------------------------------------------------
    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @classmethod
    def resolve_params(cls, classifier: Classifier, overrides: Mapping[str, Any] | None = None) -> dict:
        """Defaults filled in, every value validated, layer roles resolved to layer names.

        Unknown names raise ``ValueError`` listing the accepted ones.
        """
        overrides = dict(overrides or {})
        known = {p.name for p in cls.params}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"method {cls.key!r} has no parameter(s) {unknown}; accepted: {sorted(known) or 'none'}"
            )
        resolved: dict[str, Any] = {}
        for p in cls.params:
            value = overrides.get(p.name, p.default)
            if value is None and p.default_for is not None:
                value = p.default_for(classifier)
            value = p.validate(value) if value is not None or p.kind == "layer" else None
            if p.kind == "layer":
                if value is None:
                    value = classifier.default_layer(_layer_role(p, classifier))
                classifier.layer(value)  # raises a clear ValueError when absent
            resolved[p.name] = value
        return resolved

    @classmethod
    def schema(cls, classifier: Classifier | None = None) -> dict:
        """The method's description for the web: key, label, families and parameter forms.

        With a classifier, layer parameters list its hookable layers as choices and show the
        resolved default.
        """
        params = []
        for p in cls.params:
            entry = p.to_schema()
            if p.kind == "layer" and classifier is not None:
                entry["choices"] = classifier.hookable_layers()
                try:
                    entry["default"] = p.default or classifier.default_layer(_layer_role(p, classifier))
                except ValueError:
                    entry["default"] = None
            params.append(entry)
        return {
            "key": cls.key,
            "aliases": list(cls.aliases),
            "label": cls.label or cls.key,
            "families": sorted(cls.families),
            "group": cls.group,
            "group_label": METHOD_GROUPS.get(cls.group, cls.group),
            "group_rank": list(METHOD_GROUPS).index(cls.group) if cls.group in METHOD_GROUPS else len(METHOD_GROUPS),
            "uses_gradients": cls.uses_gradients,
            "params": params,
            "doc": (cls.__doc__ or "").strip(),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r}>"


LAYER_PARAM = Param(
    "layer", "layer", None,
    help="Layer whose activations and gradients are used (default: the model's last conv block "
         "for CNNs, the last block's normed tokens for ViTs).",
)


#: Images per forward pass of the perturbation methods when the user sets none. On a CPU the
#: per-image cost of a forward pass is lowest at small batches, where a batch's activations stay
#: in cache. Measured on 2 cores, ms per image at batches of 4 / 8 / 16 (fastest of 8–30 runs,
#: interleaved): EfficientNet-Lite0 8.9 / 9.4 / 11.7, ResNet18 20.7 / 18.9 / 20.1, VGG19
#: 207.6 / 202.5 / 200.5; ViT-B/16 is flat from 4 on. A model may name its own CPU number
#: (``Classifier.cpu_batch_size``): whole methods on EfficientNet-Lite0, whose passes are
#: memory-bound, run faster at 4 than its forward pass alone suggests (Group-CAM 1.24×).
#: An accelerator wants many images per pass to fill its cores.
CPU_BATCH_SIZE = 8
ACCELERATOR_BATCH_SIZE = 64


def device_batch_size(classifier: Classifier) -> int:
    """The default number of perturbed images per pass on ``classifier``'s device."""
    if classifier.device.type != "cpu":
        return ACCELERATOR_BATCH_SIZE
    return classifier.cpu_batch_size or CPU_BATCH_SIZE


#: Images per chunk of the methods that keep every layer's activations for their own backward
#: rules (:class:`OwnForwardMethod`: relevance propagation, rollouts). On a CPU 8 (EfficientNet-
#: Lite0's LRP costs the same per image from 2 to 8). On an accelerator a chunk costs a fixed
#: ~50 ms of kernel launches (a hundred layers, each with its own rule) whatever its size:
#: measured on an H100 with 32 images, chunks of 32 against 8 made LRP 3.98× faster on
#: EfficientNet-Lite0, 3.83× on ResNet18, 1.46× on ViT-B/16 and Transformer Attribution 1.43×;
#: 32 ViT-B/16 images keep about 7.4 GB (230 MB each), which bounds it.
OWN_FORWARD_CPU_BATCH_SIZE = 8
OWN_FORWARD_ACCELERATOR_BATCH_SIZE = 32


def own_forward_batch_size(classifier: Classifier) -> int:
    """The default number of images per chunk of an :class:`OwnForwardMethod` on ``classifier``'s device."""
    return OWN_FORWARD_CPU_BATCH_SIZE if classifier.device.type == "cpu" else OWN_FORWARD_ACCELERATOR_BATCH_SIZE


def batch_size_param(what: str = "perturbed images", *, keeps_activations: bool = False) -> Param:
    """The ``batch_size`` parameter, empty by default: resolved from the device when the user sets
    none (:func:`device_batch_size`, or :func:`own_forward_batch_size` for methods that keep every
    layer's activations) and recorded in the manifest."""
    if keeps_activations:
        default_for = own_forward_batch_size
        rule = f"{OWN_FORWARD_CPU_BATCH_SIZE} on a CPU, {OWN_FORWARD_ACCELERATOR_BATCH_SIZE} on a GPU"
    else:
        default_for = device_batch_size
        rule = f"{CPU_BATCH_SIZE} on a CPU (or the model's own number), {ACCELERATOR_BATCH_SIZE} on a GPU"
    return Param("batch_size", "int", None, minimum=1, maximum=4096, default_for=default_for,
                 help=f"How many {what} go through the model at once (memory vs speed); empty: {rule}.")


def tokens_to_grid(tokens: Tensor, classifier: Classifier) -> Tensor:
    """ViT tokens ``B×T×D`` → ``B×D×g×g`` without the class/prefix tokens (``g = √(T−prefix)``)."""
    prefix = getattr(classifier.module, "num_prefix_tokens", None)
    if not isinstance(prefix, int):
        prefix = 1
    b, t, d = tokens.shape
    side = math.isqrt(t - prefix)
    if side * side != t - prefix:
        raise ValueError(
            f"cannot reshape {t} tokens ({prefix} prefix) of model {classifier.name!r} to a square grid; "
            "choose a layer whose output holds the patch tokens"
        )
    return tokens[:, prefix:, :].transpose(1, 2).reshape(b, d, side, side)


def fixed_input_size(classifier: Classifier) -> bool:
    """Whether the model accepts only its own input size (timm's patch embedding with a strict
    image size, as Swin's window layout needs)."""
    embed = getattr(classifier.module, "patch_embed", None)
    return bool(getattr(embed, "strict_img_size", False)) and getattr(embed, "img_size", None) is not None


def as_feature_map(x: Tensor, classifier: Classifier) -> Tensor:
    """A layer's output as ``B×K×h×w``: CNN maps pass through, ViT tokens are reshaped.

    A model with ``feature_layout == "NHWC"`` (timm's Swin) emits ``B×h×w×C`` from its stages;
    those (the two middle sizes equal, the last one not) get their channels moved first, while its
    convolutional patch embedding (``B×C×h×w``) passes through."""
    if x.dim() == 4:
        if classifier.feature_layout == "NHWC" and x.shape[1] == x.shape[2] != x.shape[3]:
            return x.permute(0, 3, 1, 2)
        return x
    if x.dim() == 3 and classifier.family == "vit":
        return tokens_to_grid(x, classifier)
    raise ValueError(
        f"layer output of shape {tuple(x.shape)} is not a B×K×h×w feature map"
        + (" nor B×T×D tokens" if classifier.family == "vit" else "")
        + "; choose a convolutional layer (or a transformer block for a ViT)"
    )


def activations_and_gradients(
    classifier: Classifier, inputs: Tensor, targets: Tensor | None, layer: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forward and one (truncated) backward pass for the whole batch.

    Returns ``(A, G, logits, targets)``: the layer's activations ``A`` (``B×K×h×w``; ViT tokens
    reshaped), ``G = ∂ Σ_b logit_b[target_b] / ∂A`` (each image's gradient depends only on its
    own logit, the model being in eval mode), the logits ``B×C`` and the targets (the top-1
    classes when ``targets`` is ``None``). The backward pass stops at the layer and computes no
    parameter gradient.
    """
    with capture_layer(classifier.module, classifier.layer(layer)) as cap:
        logits = classifier.module(cpu_channels_last(inputs))
        if cap.activation is None:
            raise ValueError(f"layer {layer!r} did not run during the forward pass of {classifier.name!r}")
        if targets is None:
            targets = logits.detach().argmax(dim=1)
        targets = targets.to(logits.device)
        score = logits.gather(1, targets.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, cap.activation)
    act = cap.activation.detach()
    return as_feature_map(act, classifier), as_feature_map(grad, classifier), logits.detach().float(), targets


def cpu_channels_last(x: Tensor) -> Tensor:
    """NHWC layout for image batches on the CPU: oneDNN then takes its faster convolution path
    (measured 1.2–2× on ResNet-18 and EfficientNet-Lite0 forward passes); values are unchanged."""
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def layer_activations(classifier: Classifier, inputs: Tensor, layer: str) -> tuple[Tensor, Tensor]:
    """One forward pass without gradients: ``(A, logits)``, ``A`` as ``B×K×h×w``."""
    with capture_layer(classifier.module, classifier.layer(layer)) as cap, torch.no_grad():
        logits = classifier.module(cpu_channels_last(inputs))
    if cap.activation is None:
        raise ValueError(f"layer {layer!r} did not run during the forward pass of {classifier.name!r}")
    return as_feature_map(cap.activation.detach(), classifier), logits


def target_probabilities(
    classifier: Classifier,
    build: Callable[[slice], tuple[Tensor, Tensor]],
    count: int,
    batch_size: int,
) -> Tensor:
    """``softmax(F(x_i))[c_i]`` for ``count`` inputs built chunk by chunk.

    ``build(sl)`` returns the inputs ``n×3×S×S`` and targets ``LongTensor[n]`` for the slice
    ``sl`` of ``0…count−1``, so at most ``batch_size`` perturbed images exist at a time.
    Returns a float32 tensor of length ``count`` on the classifier's device.
    """
    out = []
    with torch.no_grad():
        for sl in chunks(count, batch_size):
            x, c = build(sl)
            probs = torch.softmax(classifier.module(cpu_channels_last(x)).float(), dim=1)
            out.append(probs.gather(1, c.view(-1, 1)).squeeze(1))
    if not out:
        return torch.zeros(0, device=classifier.device)
    return torch.cat(out)


class OwnForwardMethod(Method):
    """A method whose own forward pass gives the logits, run in chunks of ``batch_size`` images.

    Relevance propagation keeps every block's (or layer's) activations of a chunk, e.g. about
    230 MB per image for ViT-B/16 (measured peak for Transformer Attribution and LRP), so the
    enhancement's windows or a large experiment batch are split. Images never interact, so the
    maps do not depend on the chunk size. The engine's separate prediction pass is skipped: a
    subclass picks each image's top-1 class from the logits of its own pass when no target is
    given, in :meth:`maps_and_logits`.
    """

    def maps_and_logits(
        self, classifier: Classifier, inputs: Tensor, targets: Tensor | None, params: Mapping[str, Any]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(maps, logits, targets)`` for one chunk; ``targets=None`` explains each top-1 class."""
        raise NotImplementedError

    def explain_batch(self, classifier, inputs, targets, params, generator=None):
        size = params["batch_size"]
        parts = [
            self.maps_and_logits(classifier, inputs[sl], None if targets is None else targets[sl], params)
            for sl in chunks(inputs.shape[0], size)
        ]
        maps, logits, chosen = (torch.cat(p) for p in zip(*parts))
        return maps, logits.float(), chosen

    def attribute(self, classifier, inputs, targets, params, generator=None):
        return self.explain_batch(classifier, inputs, targets, params, generator)[0]


def top1_if_none(logits: Tensor, targets: Tensor | None) -> Tensor:
    """``targets`` on the logits' device, or each row's arg-max when ``None``."""
    if targets is None:
        return logits.detach().argmax(dim=1)
    return targets.to(logits.device)


class CamMethod(Method):
    """Gradient class activation maps: one forward and one backward pass for the whole batch.

    With ``A`` the activations ``B×K×h×w`` of the chosen layer and ``G = ∂F_c/∂A`` the gradient
    of the raw target logit, the map is ``ReLU(Σ_k w_k A_k)`` (``B×h×w``). Subclasses override
    :meth:`weights` (``B×K``) or, for maps that are not a weighted channel sum, :meth:`cam`.
    For a ViT (``family == "vit"``) the ``B×T×D`` tokens are reshaped to ``B×D×g×g`` after
    dropping the class/prefix tokens.
    """

    families: ClassVar[frozenset[str]] = frozenset({"cnn"})
    group = "cam"
    params: ClassVar[tuple[Param, ...]] = (LAYER_PARAM,)
    uses_gradients: ClassVar[bool] = True

    def weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        raise NotImplementedError

    def cam(self, activations: Tensor, gradients: Tensor) -> Tensor:
        w = self.weights(activations, gradients)
        return torch.relu(torch.einsum("bk,bkhw->bhw", w, activations))

    def attribute(self, classifier, inputs, targets, params, generator=None):
        return self.explain_batch(classifier, inputs, targets, params, generator)[0]

    def explain_batch(self, classifier, inputs, targets, params, generator=None):
        # The forward pass that feeds the gradients also gives the prediction: no extra pass.
        act, grad, logits, targets = activations_and_gradients(classifier, inputs, targets, params["layer"])
        return self.cam(act.float(), grad.float()), logits, targets


__all__ = [
    "Param", "Method", "OwnForwardMethod", "top1_if_none", "CamMethod", "LAYER_PARAM", "batch_size_param", "device_batch_size", "own_forward_batch_size", "tokens_to_grid",
    "as_feature_map", "activations_and_gradients", "layer_activations", "target_probabilities",
    "PARAM_KINDS",
]
