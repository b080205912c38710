"""The one entry point: ``explain(classifier, inputs, method) -> list[Explanation]``.

::

    from explain.core.engine import explain
    from explain.core.zoo import load_classifier
    clf = load_classifier("efficientnet_lite0")
    [e] = explain(clf, x, "gradcam", enhance=True)      # x: 1×3×224×224 normalised
    e.saliency, e.target, e.manifest["params"]

Several methods on the same inputs: ``explain_many`` computes a pass that several of them share
once (the gradient CAM family's forward and backward pass on one layer) and yields each
method's explanations as soon as they are ready::

    for index, [e] in explain_many(clf, x, ["gradcam", "gradcampp", "layercam", "rise"], targets=[281]):
        ...
"""
from __future__ import annotations

import functools
import importlib.metadata
import logging
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from explain.core.enhance import SlidingWindowEnhancement, finish_maps, resolve_enhance_params
from explain.core.folding import folded_batch_norms
from explain.core.handle import Classifier
from explain.core.hooks import HookSession
from explain.core.methods.base import CamMethod, Method, activations_and_gradients
from explain.core.registry import get_method

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Explanation:
    """One image's explanation and everything needed to reproduce it.

    ``saliency``: ``H×W`` (the input's size) float32 on the CPU, finite, non-negative (raw scale of the method;
    in ``[0, 1]`` when enhanced). ``logits``/``probabilities``: ``C`` float32. ``manifest``:
    JSON-able provenance (method, params, enhancement, layer, model, weights checksum, input
    shape, library versions, seed, device, runtime).
    """

    saliency: Tensor
    logits: Tensor
    probabilities: Tensor
    target: int
    manifest: dict = field(default_factory=dict)

    def top(self, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` most probable classes as ``(index, probability)``."""
        values, indices = self.probabilities.topk(min(k, self.probabilities.numel()))
        return [(int(i), float(v)) for i, v in zip(indices, values)]


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    # Read once per process: parsing the distributions' metadata costs about a millisecond, and
    # the code this process runs does not change when a package is reinstalled under it.
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "timm", "zennit"):
        # the installed distribution's version: zennit has no __version__ attribute
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return tuple(versions.items())


def library_versions() -> dict[str, str]:
    """Python's and the numerical libraries' versions, for provenance manifests."""
    return dict(_installed_versions())


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _check_inputs(classifier: Classifier, inputs: Tensor) -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor (B×3×H×W, normalised), not {type(inputs).__name__}")
    if inputs.dim() == 3:
        inputs = inputs.unsqueeze(0)
    if inputs.dim() != 4 or inputs.shape[1] != 3 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be B×3×H×W (normalised), got shape {tuple(inputs.shape)}")
    if classifier.family == "vit" and inputs.shape[-1] != inputs.shape[-2]:
        # a ViT's position embedding fixes its input grid; a CNN takes any H×W
        raise ValueError(
            f"a ViT takes square inputs only, got {tuple(inputs.shape[-2:])}; "
            f"resize to {classifier.input_size}×{classifier.input_size} (imaging.preprocess does)"
        )
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating point tensor, not {inputs.dtype}")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values")
    # Keep the model's own precision (float64 models are used to check methods exactly).
    dtype = next(classifier.module.parameters()).dtype
    return inputs.detach().to(classifier.device, dtype if dtype.is_floating_point else torch.float32)


def _check_targets(classifier: Classifier, targets, batch: int) -> Tensor | None:
    if targets is None:
        return None
    t = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} targets for a batch of {batch} images")
    bad = [int(v) for v in t if not 0 <= int(v) < classifier.num_classes]
    if bad:
        raise ValueError(f"target class(es) {bad} out of range for {classifier.name!r} ({classifier.num_classes} classes)")
    return t.clone().to(classifier.device)


def _method(method: str | Method) -> Method:
    m = get_method(method) if isinstance(method, str) else method
    if not isinstance(m, Method):
        raise TypeError(f"method must be a registry key or a Method instance, not {type(method).__name__}")
    return m


def _resolve(classifier: Classifier, m: Method, params: Mapping[str, Any] | None, batch_size: int | None) -> dict:
    reason = m.unsupported_reason(classifier)
    if reason is not None:
        raise ValueError(f"method {m.key!r} cannot explain {classifier.name!r}: it {reason}")
    overrides = dict(params or {})
    if batch_size is not None:
        if not any(p.name == "batch_size" for p in m.params):
            logger.debug("method %s has no batch_size parameter; ignoring batch_size=%s", m.key, batch_size)
        else:
            overrides["batch_size"] = batch_size
    return m.resolve_params(classifier, overrides)


def _explanations(classifier: Classifier, m: Method, resolved: dict, enhance_params: dict | None, x: Tensor,
                  maps: Tensor, logits: Tensor, chosen: Tensor, *, seed: int, folded, seconds: float,
                  extra: Mapping[str, Any] | None = None) -> list[Explanation]:
    logits = logits.detach().float().cpu()
    probabilities = torch.softmax(logits, dim=1)
    maps = maps.detach().float().cpu().contiguous()
    manifest_common = {
        "method": m.key,
        "params": _jsonable(resolved),
        "enhance": _jsonable(enhance_params),
        "layer": resolved.get("layer"),
        "model": classifier.name,
        "model_family": classifier.family,
        "weights_checksum": classifier.weights_checksum,
        "input_shape": [1, *x.shape[1:]],
        "batch_size_images": int(x.shape[0]),
        "versions": library_versions(),
        "seed": int(seed),
        "device": str(classifier.device),
        "folded_batch_norms": folded,
        "seconds": seconds,
        "seconds_per_image": seconds / x.shape[0],
        **(extra or {}),
    }
    return [
        Explanation(
            saliency=maps[i].clone(),
            logits=logits[i].clone(),
            probabilities=probabilities[i].clone(),
            target=int(chosen[i]),
            manifest={**manifest_common, "target": int(chosen[i])},
        )
        for i in range(x.shape[0])
    ]


def explain(
    classifier: Classifier,
    inputs: Tensor,
    method: str | Method,
    *,
    targets: Tensor | list[int] | int | None = None,
    params: Mapping[str, Any] | None = None,
    enhance: bool | Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> list[Explanation]:
    """Explain each image of a batch with one method (optionally enhanced).

    Args:
        classifier: model and metadata (:class:`explain.core.handle.Classifier`).
        inputs: normalised ``B×3×H×W`` (or ``3×H×W``) float tensor; square for ViTs, any
            ``H×W`` for CNNs (``imaging.preprocess`` gives the model's square crop).
        method: a registry key (or alias) or a :class:`Method` instance.
        targets: class per image (int, list or ``LongTensor[B]``); default each image's top-1.
        params: method parameter overrides; validated, defaults filled, layers resolved.
        enhance: ``None``/``False``, ``True`` (defaults) or a dict of enhancement parameters.
        seed: seeds the ``torch.Generator`` handed to random methods (fresh for every call).
        batch_size: overrides the method's ``batch_size`` parameter where it has one.

    Returns:
        One :class:`Explanation` per image. A batch gives the same maps as the images one by one;
        the model is left exactly as it was (parameters, gradients, training flags, hooks).
    """
    started = time.perf_counter()
    m = _method(method)
    resolved = _resolve(classifier, m, params, batch_size)
    enhance_params = resolve_enhance_params(enhance)
    x = _check_inputs(classifier, inputs)
    wanted = _check_targets(classifier, targets, x.shape[0])
    size = tuple(x.shape[-2:])
    runner = SlidingWindowEnhancement(m, **enhance_params) if enhance_params else m

    fold = classifier.fold_batch_norms and m.folds_batch_norms
    with HookSession(classifier.module), (folded_batch_norms(classifier.module) if fold else nullcontext(0)) as folded:
        if m.batchable:
            generator = torch.Generator().manual_seed(int(seed))
            maps, logits, chosen = runner.explain_batch(classifier, x, wanted, resolved, generator)
            maps = finish_maps(maps, size)
        else:
            # One image per call, each with a fresh generator: a batch equals the images one by one.
            parts = []
            for i in range(x.shape[0]):
                generator = torch.Generator().manual_seed(int(seed))
                one = None if wanted is None else wanted[i:i + 1]
                mp, lg, tg = runner.explain_batch(classifier, x[i:i + 1], one, resolved, generator)
                parts.append((finish_maps(mp, size), lg, tg))
            maps = torch.cat([p[0] for p in parts])
            logits = torch.cat([p[1] for p in parts])
            chosen = torch.cat([p[2] for p in parts])
    seconds = time.perf_counter() - started
    return _explanations(classifier, m, resolved, enhance_params, x, maps, logits, chosen,
                         seed=seed, folded=folded, seconds=seconds)


def shared_pass_key(method: Method, resolved: Mapping[str, Any], enhance_params: Mapping[str, Any] | None):
    """What a method's maps are computed from, when another method can compute it for it too.

    The gradient CAM family (:class:`CamMethod` without its own ``explain_batch``: Grad-CAM,
    Grad-CAM++, XGrad-CAM, LayerCAM) maps the activations ``A`` and gradients ``G = ∂F_c/∂A`` of
    one layer from one forward and one backward pass; methods with the same layer and targets
    share that pass. ``None``: the method runs its own passes (perturbation methods, multi-scale
    ones, relevance propagation, and every enhanced method, whose windows depend on the method).
    """
    if enhance_params or not isinstance(method, CamMethod) or type(method).explain_batch is not CamMethod.explain_batch:
        return None
    return ("cam", resolved["layer"])


def explain_many(
    classifier: Classifier,
    inputs: Tensor,
    methods: Sequence[str | Method],
    *,
    targets: Tensor | list[int] | int | None = None,
    params: Sequence[Mapping[str, Any] | None] | None = None,
    enhance: Sequence[bool | Mapping[str, Any] | None] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> Iterator[tuple[int, list[Explanation]]]:
    """Several methods on the same batch, each pass that methods share computed once.

    ``params`` and ``enhance`` give each method's entry (as in :func:`explain`), in the order of
    ``methods``. Yields ``(index into methods, explanations)`` as each method's maps are ready:
    the methods of a shared pass (:func:`shared_pass_key`) one after another once their pass is
    done, every other method alone through :func:`explain`. The maps equal those of
    :func:`explain` for each method alone; a shared map's manifest names the methods of its pass
    (``shared_pass``) and its ``seconds`` are the pass's plus its own.

    All entries are validated before any pass runs, so a bad parameter costs no model time.

    Example::

        done = dict(explain_many(clf, x, ["gradcam", "xgradcam", "layercam"], targets=[281]))
        done[1][0].saliency                       # XGrad-CAM's map, from Grad-CAM's pass
    """
    ms = [_method(method) for method in methods]
    n = len(ms)
    params = list(params) if params is not None else [None] * n
    enhance = list(enhance) if enhance is not None else [None] * n
    if len(params) != n or len(enhance) != n:
        raise ValueError(f"got {n} methods, {len(params)} parameter sets and {len(enhance)} enhancement settings")
    resolved = [_resolve(classifier, m, p, batch_size) for m, p in zip(ms, params)]
    enhance_params = [resolve_enhance_params(e) for e in enhance]
    x = _check_inputs(classifier, inputs)
    wanted = _check_targets(classifier, targets, x.shape[0])

    groups: dict[Any, list[int]] = {}
    for i, (m, r, e) in enumerate(zip(ms, resolved, enhance_params)):
        key = shared_pass_key(m, r, e)
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    for members in groups.values():  # in the order of each group's first method
        if len(members) == 1:
            i = members[0]
            yield i, explain(classifier, x, ms[i], targets=wanted, params=params[i], enhance=enhance[i],
                             seed=seed, batch_size=batch_size)
            continue
        started = time.perf_counter()
        layer = resolved[members[0]]["layer"]
        with HookSession(classifier.module):
            act, grad, logits, chosen = activations_and_gradients(classifier, x, wanted, layer)
        act, grad = act.float(), grad.float()
        pass_seconds = time.perf_counter() - started
        shared = {"shared_pass": {"methods": [ms[i].key for i in members], "seconds": pass_seconds}}
        for i in members:
            own = time.perf_counter()
            maps = finish_maps(ms[i].cam(act, grad), tuple(x.shape[-2:]))
            seconds = pass_seconds + time.perf_counter() - own
            yield i, _explanations(classifier, ms[i], resolved[i], None, x, maps, logits, chosen,
                                   seed=seed, folded=0, seconds=seconds, extra=shared)
