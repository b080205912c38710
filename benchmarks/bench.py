"""Explainer benchmark: seconds per image against the floor of the passes each method needs.

``./run bench`` (``python -m benchmarks.bench``)::

    python -m benchmarks.bench --models resnet18 vgg19 --methods gradcam gradcampp --images 4
    python -m benchmarks.bench --quick            # a few minutes: small N, few images

For every (model, method): the seconds per image of :func:`explain.core.engine.explain` on a
batch of ``--images`` photos; the forward/backward passes the method needs per image (its
*pass plan*); the *floor*, the cost of exactly those passes for the same images through the
plain model, each kind at its best batch size, measured in the same run; and their ratio. For the gradient CAM family it also times
pytorch-grad-cam on the same batch and layer, checks that the maps are equal (Pearson ≥ 0.999
after min-max normalisation) and reports the speed ratio. Results go to
``benchmarks/results/<name>.{json,md}`` (``--name``, default ``bench-<timestamp>``). Timings on a shared machine vary: the method, its floor and
pytorch-grad-cam are timed in alternation, each run as a whole, and the fastest run counts: at
least ``--repeats`` runs, more for fast methods (until their runs took ``--min-seconds`` together).
Models without real weights on disk are benchmarked with random weights (the cost is the same).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from explain import cpu_memory

HUGE_PAGES, HEAP_KEPT = cpu_memory.apply()      # before any tensor exists: as the site runs

from explain.core import zoo  # noqa: E402 - after the allocator settings
from explain.core.engine import explain, library_versions  # noqa: E402 - after the allocator settings
from explain.core.folding import folded_batch_norms  # noqa: E402 - after the allocator settings
from explain.core.methods.base import activations_and_gradients, cpu_channels_last, layer_activations  # noqa: E402 - after the allocator settings
from explain.core.registry import get_method_class, methods_for  # noqa: E402 - after the allocator settings

logger = logging.getLogger("benchmarks.bench")
RESULTS = Path(__file__).resolve().parent / "results"
CAM_FAMILY = ("gradcam", "gradcampp", "xgradcam", "layercam")
DEFAULT_MODELS = ("efficientnet_lite0", "resnet18", "vgg19", "vit_b_16")


# -- inputs ---------------------------------------------------------------------------------
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "stereo_motorcycle")


def photo_images(count: int) -> list[tuple[str, Any]]:
    """``count`` ``(name, RGB image)`` photos from scikit-image (repeated if more are asked for)."""
    import skimage.data
    from PIL import Image

    out = []
    for i in range(count):
        name = PHOTOS[i % len(PHOTOS)]
        pixels = getattr(skimage.data, name)()
        if isinstance(pixels, tuple):
            pixels = pixels[0]
        out.append((name, Image.fromarray(pixels).convert("RGB")))
    return out


def photos(classifier, count: int) -> torch.Tensor:
    """``count`` normalised photos from scikit-image, as the classifier's input batch."""
    from explain.core.imaging import preprocess

    return torch.stack([preprocess(image, classifier)[0] for _, image in photo_images(count)]).to(classifier.device)


def get_classifier(name: str, device):
    try:
        return zoo.load_classifier(name, device=device), "real"
    except zoo.WeightsMissing:
        return zoo.random_classifier(name, seed=0, device=device), "random"


def runs_folded(method, classifier) -> bool:
    """Whether the method runs its passes with the model's batch norms folded (the engine folds
    them for multi-pass methods, LRP's canonizer for its own pass); its floor's passes then run so too."""
    return classifier.fold_batch_norms and (method.folds_batch_norms or method.folds_batch_norms_in_rules)


# -- pass plans -----------------------------------------------------------------------------
#: Pass kinds, each a plain pass through the unmodified model (never the method's own code),
#: and how the Markdown labels them. Parameters stay frozen in all of them (no parameter
#: gradients); ``bwd…`` kinds time the backward pass alone, after an untimed forward pass.
PASS_KINDS = {
    "fwd": "fwd",                    # forward, no gradient (the model as loaded)
    "fwdbwd": "fwdbwd→layer",        # forward, then backward from the target logit to the method's layer
    "fwdbwd_input": "fwdbwd→input",  # forward, then backward from the target logit to the input pixels
    "bwd_input": "bwd→input",        # that backward alone
    "fwd_attn": "fwd+attn",          # ViT forward, no gradient, attention maps materialised (no fused kernel)
    "fwdbwd_attn": "fwdbwd→attn",    # that forward with a graph, then backward to every block's attention map
    "bwd_attn": "bwd→attn",          # that backward alone
}
#: Kinds that are one pass per explained image: a batch of ``B`` images holds ``B`` of them
#: whatever the count (two back-projections of one image are not a batch of two).
PER_IMAGE = frozenset(PASS_KINDS) - {"fwd", "fwdbwd"}
#: The LRP rules need the attention probabilities, so on a ViT the gradient kinds toward the
#: input run with them materialised too.
ATTENTION_KINDS = frozenset({"fwd_attn", "fwdbwd_attn", "bwd_attn"})


def pass_plan(key: str, classifier, params: dict, x: torch.Tensor) -> list[tuple[str, int, float]] | None:
    """The passes per image ``(kind, input size, count)`` the method inherently needs, kinds
    as in :data:`PASS_KINDS`; ``None`` where this benchmark does not know the method's passes.

    The floor is what those passes cost through the unmodified model. Where a method's own
    forward pass already yields the logits, no separate prediction pass is counted: the
    target (top-1 when none is given) can be read from that pass before its backward pass.
    Work that is not a model pass (rollout's ``N×N`` products, ``B×h×N×N`` element-wise
    products, the map's upsampling) is not counted in the floor.

    - CAM family (``gradcam`` … ``layercam``, CNN and ViT): ``1×fwdbwd→layer``; the prediction
      comes from the same forward pass.
    - ``lrp`` on a CNN: ``1×fwdbwd→input + 1×fwd``. Relevance goes from the target logit to the
      pixels layer by layer; each layer's back-projection ``x ⊙ (Wᵀ s)`` costs what the
      gradient's does (the backward pass), and z⁺ needs its denominators ``z⁺ = Σ x⁺w⁺`` (+
      ``x⁻w⁻``), one more evaluation of every convolution with the positive weights: a second
      forward pass. ε in the dense layers reuses the forward's ``z``. Not counted: z^B's two
      extra convolutions at the first layer, the doubled z⁺ and back-projection for signed
      inputs (EfficientNet's linear bottlenecks), the w² fallback's convolution and
      back-projection where units are dead (EfficientNet's depthwise layers), and the rules'
      element-wise work (quotients, masks), so there the floor is a lower bound
      (:func:`lrp_convolution_work` gives what the doubled convolutions add: 1.32× on
      EfficientNet-Lite0, whose signed inputs carry 49 % of its multiply-adds). The
      back-projections run as transposed convolutions, which on a CPU cost about a forward
      convolution where the floor's backward pass (autograd's convolution backward) may cost
      more.
    - ``lrp`` on a ViT: ``1×fwdbwd→input + 1×fwd+attn + 1×bwd→input``. α1β0 in every linear
      layer on signed inputs (LayerNorm outputs): with ``z = x W`` known from the forward pass,
      ``z⁺ = (|x| |W| + z) / 2`` is one more product per layer (a forward pass's worth) and
      ``R = (x ⊙ s Wᵀ + |x| ⊙ s |W|ᵀ) / 2`` two back-projections (two backward passes). The z-rule
      at ``A V`` and ``Q Kᵀ`` is one back-projection, like the gradient. Attention maps are
      materialised throughout, since the rules need them.
    - ``partial_lrp``: ``1×fwd+attn``. One forward pass (it gives the prediction and every tensor
      the rules need); the α1β0 relevance from the logit through the head and the last block's
      MLP and projection to its attention map is needed for the class token's row only (the only
      token the head reads), a few vector–matrix products per layer, not counted.
    - ``transformer_attribution``: ``1×fwdbwd→attn + 1×fwd+attn + 2×bwd→attn``. One forward pass
      with a graph and one backward pass to every block's attention map give ``A_b`` and ``∇A_b``;
      the LRP relevance ``R_b`` at the attention maps down to ``start_block`` costs the
      ViT ``lrp`` rules over those blocks (a forward pass's worth of denominators, two
      back-projections), scaled by the share of blocks propagated through. Not counted: the
      products ``∇A ⊙ R`` and the rollout over the blocks.
    - ``gradient_rollout``: ``1×fwdbwd→attn``: ``A_b`` and ``∇A_b`` from one forward and one
      backward pass. Not counted: ``∇A ⊙ A`` and the rollout (``depth`` products of ``N×N``
      matrices per image, about 0.5 % of a ViT-B/16 forward pass).
    - ``attention_rollout``: ``1×fwd+attn``: the attention maps of one forward pass, which also
      gives the prediction. Not counted: head fusion, ``discard_ratio``'s top-k and the rollout.
    - Perturbation and multi-scale methods: as listed in the code below.
    """
    s = int(x.shape[-1])
    if key in CAM_FAMILY:
        return [("fwdbwd", s, 1)]             # the prediction comes from the same forward pass
    if key == "lrp":
        if classifier.family == "vit":
            return [("fwdbwd_input", s, 1), ("fwd_attn", s, 1), ("bwd_input", s, 1)]
        return [("fwdbwd_input", s, 1), ("fwd", s, 1)]
    if key == "partial_lrp":
        return [("fwd_attn", s, 1)]
    if key == "transformer_attribution":
        depth = len(classifier.module.blocks)
        share = (depth - int(params.get("start_block", 0))) / depth
        return [("fwdbwd_attn", s, 1), ("fwd_attn", s, share), ("bwd_attn", s, 2 * share)]
    if key == "gradient_rollout":
        return [("fwdbwd_attn", s, 1)]
    if key == "attention_rollout":
        return [("fwd_attn", s, 1)]
    if key == "scorecam":
        acts, _ = layer_activations(classifier, x, params["layer"])
        flat = acts.flatten(2)
        varying = float((flat.amax(2) > flat.amin(2)).float().sum(1).mean())
        extra = 1 if params["baseline"] else 0
        return [("fwd", s, 1), ("fwd", s, varying), ("fwd", s, extra / x.shape[0])]
    if key == "groupcam":
        groups = min(params["groups"], _channels(classifier, params["layer"], x))
        return [("fwd", s, 1), ("fwdbwd", s, 1), ("fwd", s, groups + 1)]
    if key == "msgcam":
        groups = min(params["groups"], _channels(classifier, params["layer"], x))
        plan = [("fwd", s, 1)] + [("fwdbwd", s + params["step"] * t, 1) for t in range(params["scales"])]
        return plan + [("fwd", s, groups + 1)]
    if key == "cameras":
        return [("fwd", s, 1)] + [("fwdbwd", s + params["step"] * t, 1) for t in range(params["scales"])]
    if key == "rise":
        return [("fwd", s, 1), ("fwd", s, params["masks"])]
    return None


def pass_label(kind: str, size: int, count: float) -> str:
    """``"1×fwdbwd→input@224"``."""
    return f"{count:g}×{PASS_KINDS.get(kind, kind)}@{size}"


def pass_cap(kind: str, count: float, images: int) -> int:
    """The largest batch a floor may use for this entry: the images' own passes are never more
    than the images; independent passes (masks, channel groups) as many as there are."""
    if kind in PER_IMAGE:
        return images
    return max(1, math.ceil(count * images))


def lrp_convolution_work(classifier, x: torch.Tensor) -> float | None:
    """Multiply-adds of the convolutions LRP's CNN rules cannot do without, over those of its
    floor's passes; ``None`` for a ViT.

    The floor (``1×fwdbwd→input + 1×fwd``) evaluates every convolution three times: forward,
    input gradient, forward again (z⁺'s denominators). z⁺ on a convolution whose input has
    negative entries needs both ``x⁺ w⁺`` and ``x⁻ w⁻`` (every layer but the first, which takes
    z^B), so there the denominators and the back-projection each run over twice the input
    channels: with ``M`` all convolutions' multiply-adds and ``S`` those of the convolutions
    after the first that see a negative input, the rules need ``(3M + 2S) / 3M`` of the floor.
    The ratio to the floor the rules' convolutions alone would give if time followed
    multiply-adds; the w² back-projections where units are dead and z^B's extra convolutions are
    left out. Signs are read from a forward pass of the first image (the benchmark's photos).
    """
    if classifier.family != "cnn":
        return None
    convolutions = []                    # (multiply-adds per image, input has a negative entry)

    def record(module, inputs, output):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        convolutions.append((output[0].numel() * per_output, bool(inputs[0].amin() < 0)))

    handles = [m.register_forward_hook(record) for m in classifier.module.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            classifier.module(cpu_channels_last(x[:1]))
    finally:
        for handle in handles:
            handle.remove()
    total = sum(macs for macs, _ in convolutions)
    signed = sum(macs for macs, negative in convolutions[1:] if negative)
    return (3 * total + 2 * signed) / (3 * total) if total else None


def _channels(classifier, layer, x) -> int:
    acts, _ = layer_activations(classifier, x[:1], layer)
    return int(acts.shape[1])


@contextlib.contextmanager
def _attention_maps(module, keep: bool):
    """ViT forward passes with explicit ``softmax(QKᵀ/√d)`` (timm's ``fused_attn`` off, as the
    relevance trace runs them), the maps collected in a list (attached to the graph) when
    ``keep``; flags and hooks restored on exit."""
    from timm.layers import Attention

    from explain.core.relevance.vit import unfused_attention

    maps, handles = [], []
    with unfused_attention(module):
        try:
            if keep:
                for m in module.modules():
                    if isinstance(m, Attention):
                        handles.append(m.attn_drop.register_forward_hook(lambda mod, args, out: maps.append(out)))
            yield maps
        finally:
            for h in handles:
                h.remove()


def run_pass(classifier, layer: str | None, kind: str, xb: torch.Tensor, targets: torch.Tensor) -> float:
    """Run one pass of ``kind`` on the batch ``xb`` and return the seconds of its timed part
    (the whole pass, or only the backward pass for ``bwd…`` kinds)."""
    module = classifier.module
    vit = classifier.family == "vit"
    if kind not in PASS_KINDS:
        raise ValueError(f"unknown pass kind {kind!r}; known: {sorted(PASS_KINDS)}")
    if kind == "fwdbwd":
        start = time.perf_counter()
        activations_and_gradients(classifier, xb, targets, layer)
        _sync(xb.device)
        return time.perf_counter() - start
    if kind == "fwd":
        start = time.perf_counter()
        with torch.no_grad():
            module(cpu_channels_last(xb))
        _sync(xb.device)
        return time.perf_counter() - start
    if kind == "fwd_attn" and not vit:
        raise ValueError("pass kind 'fwd_attn' needs a ViT")
    attention = vit and (kind in ATTENTION_KINDS or kind.endswith("_input"))
    backward_only = kind.startswith("bwd")
    to_input = kind.endswith("_input")
    with _attention_maps(module, keep=attention and not to_input) as maps:
        if kind == "fwd_attn":
            start = time.perf_counter()
            with torch.no_grad():
                module(xb)
            _sync(xb.device)
            return time.perf_counter() - start
        pixels = cpu_channels_last(xb).detach().requires_grad_(True)
        start = time.perf_counter()
        with torch.enable_grad():
            logits = module(pixels)
            score = logits.gather(1, targets.view(-1, 1)).sum()
            _sync(xb.device)
            if backward_only:
                start = time.perf_counter()
            wrt = [pixels] if to_input else maps
            torch.autograd.grad(score, wrt)
        _sync(xb.device)
        return time.perf_counter() - start


#: Seconds of passes per timing sample when choosing a pass kind's batch size (see UnitCosts).
SAMPLE_SECONDS = 0.5


class UnitCosts:
    """Seconds per image of one pass kind at one input size, the best over batch sizes: how the
    floor picks the batch size of each of its pass kinds."""

    def __init__(self, classifier, layer: str | None, x: torch.Tensor, batch_sizes, repeats: int,
                 folded: bool = False):
        self.classifier, self.layer, self.x, self.folded = classifier, layer, x, folded
        self.batch_sizes, self.repeats = batch_sizes, repeats
        self.cache: dict[tuple[str, int, int], tuple[float, int]] = {}

    def cost(self, kind: str, size: int, cap: int) -> float:
        """The best per-image time over ``--batch-sizes`` no larger than ``cap``, the number of
        such passes the batch holds (four images need four gradient passes: they cannot be
        batched by 32)."""
        key = (kind, size, cap)
        if key not in self.cache:
            self.cache[key] = self._measure(kind, size, self._sizes(cap))
        return self.cache[key][0]

    def batch(self, kind: str, size: int, cap: int) -> int:
        return self.cache[(kind, size, cap)][1]

    def plan_seconds(self, plan, caps, images: int) -> float:
        """Seconds of one run of every pass of ``plan`` for ``images`` images: ``count × images``
        passes of each kind, in batches of its best size (:meth:`cost` first). A last, partial
        batch (or a fractional count) runs as a batch of the images still needed and counts for
        the share of it that is needed."""
        with folded_batch_norms(self.classifier.module) if self.folded else contextlib.nullcontext():
            total = 0.0
            for (kind, size, count), cap in zip(plan, caps):
                batch = self.batch(kind, size, cap)
                inputs = {}                       # built once per batch size, not once per pass
                needed = count * images
                while needed > 1e-9:
                    b = min(batch, math.ceil(needed - 1e-9))
                    if b not in inputs:
                        inputs[b] = self._inputs(size, b)
                    share = min(1.0, needed / b)
                    total += share * run_pass(self.classifier, self.layer, kind, *inputs[b])
                    needed -= b
        return total

    def _sizes(self, cap: int) -> list[int]:
        return sorted({min(b, cap) for b in self.batch_sizes})

    def _inputs(self, size: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``b`` of the photos (repeated as needed) at ``size``, and targets for them."""
        xb = self.x[torch.arange(b) % len(self.x)]
        if size != xb.shape[-1]:
            xb = torch.nn.functional.interpolate(xb, size=(size, size), mode="bilinear", align_corners=False)
        return xb, torch.zeros(b, dtype=torch.long, device=xb.device)

    def _measure(self, kind, size, batch_sizes):
        with folded_batch_norms(self.classifier.module) if self.folded else contextlib.nullcontext():
            best = (math.inf, 0)
            for b in batch_sizes:
                # large inputs: fewer images, as the methods do (same pixel budget)
                if size > self.x.shape[-1]:
                    b = max(1, b * (self.x.shape[-1] ** 2) // (size * size))
                xb, targets = self._inputs(size, b)
                run_pass(self.classifier, self.layer, kind, xb, targets)      # warm-up
                t = min(self._sample(kind, xb, targets) for _ in range(self.repeats)) / b
                if t < best[0]:
                    best = (t, b)
            return best

    def _sample(self, kind, xb, targets) -> float:
        """Seconds per pass, over as many passes as fill :data:`SAMPLE_SECONDS` (at least one):
        a batch size is judged by as much work at 1 image per pass as at 32."""
        spent, calls = 0.0, 0
        while calls == 0 or spent < SAMPLE_SECONDS:
            spent += run_pass(self.classifier, self.layer, kind, xb, targets)
            calls += 1
        return spent / calls


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


#: Upper bound on the timed runs of one method (see :func:`fastest_of`).
MAX_REPEATS = 30


def fastest_of(run, after_each, repeats: int, min_seconds: float, max_repeats: int = MAX_REPEATS) -> tuple[float, int]:
    """The fastest of the timed calls of ``run()`` and how many there were.

    ``run`` is called at least ``repeats`` times, and again while all its calls so far took less
    than ``min_seconds`` together (at most ``max_repeats`` calls): a method that takes 20 ms gets
    enough runs for its minimum to mean something on a noisy machine, one that takes a minute gets
    ``repeats``. ``after_each()`` runs after every call (a run of the floor's passes, in alternation).
    """
    best, spent, calls = math.inf, 0.0, 0
    while calls < repeats or (spent < min_seconds and calls < max_repeats):
        seconds = _timed(run)
        best, spent, calls = min(best, seconds), spent + seconds, calls + 1
        after_each()
    return best, calls


# -- pytorch-grad-cam -----------------------------------------------------------------------
def pytorch_grad_cam_time(key, classifier, layer, x, targets, repeats, ours):
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return None, None, None
    cls = {"gradcam": pgc.GradCAM, "gradcampp": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
           "layercam": pgc.LayerCAM}[key]
    module = classifier.module
    frozen = [p for p in module.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)      # it needs a graph through the parameters
    reshape = None
    if classifier.family == "vit":
        def reshape(t):
            prefix = getattr(module, "num_prefix_tokens", 1)
            side = int(math.isqrt(t.shape[1] - prefix))
            return t[:, prefix:].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)
    try:
        with cls(model=module, target_layers=[classifier.layer(layer)], reshape_transform=reshape) as cam:
            tg = [ClassifierOutputTarget(int(t)) for t in targets]
            maps = cam(input_tensor=x, targets=tg)
            _sync(x.device)
            seconds, ours_seconds = math.inf, math.inf
            for _ in range(repeats):   # theirs and ours in alternation: the same machine load
                seconds = min(seconds, _timed(lambda: cam(input_tensor=x, targets=tg)))
                ours_seconds = min(ours_seconds, _timed(ours))
    finally:
        module.zero_grad(set_to_none=True)
        for p in frozen:
            p.requires_grad_(False)
    return seconds / len(x), ours_seconds / len(x), maps


def pearson(a, b) -> float:
    a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
    b = (b - b.min()) / max(b.max() - b.min(), 1e-12)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# -- main -----------------------------------------------------------------------------------
def run(args) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = {}
    for item in args.param or []:
        name, _, value = item.partition("=")
        method, _, pname = name.partition(".")
        overrides.setdefault(method, {})[pname] = value
    if args.quick:
        overrides.setdefault("rise", {}).setdefault("masks", "256")
    rows = []
    for model_name in args.models:
        clf, weights = get_classifier(model_name, device)
        x = photos(clf, args.images)
        keys = [k for k in (args.methods or methods_for(clf.family)) if clf.family in get_method_class(k).families]
        units = {}
        for key in keys:
            method = get_method_class(key)
            params = method.resolve_params(clf, overrides.get(key, {}))
            logger.info("%s / %s ...", model_name, key)
            explain(clf, x[:1], key, params=params)              # warm-up (allocations, oneDNN kernels)
            plan, caps = pass_plan(key, clf, params, x), []
            if plan is not None:
                layer = params.get("layer") or clf.default_layer("tokens" if clf.family == "vit" else "cam")
                folded = runs_folded(method, clf)
                if (layer, folded) not in units:
                    units[layer, folded] = UnitCosts(clf, layer, x, args.batch_sizes, 2, folded)
                unit = units[layer, folded]
                caps = [pass_cap(kind, count, len(x)) for kind, _, count in plan]
                for (kind, size, _), cap in zip(plan, caps):
                    unit.cost(kind, size, cap)                  # picks the best batch size
            floor_runs = []

            def run_floor():
                if plan is not None:
                    floor_runs.append(unit.plan_seconds(plan, caps, len(x)))

            # Method and floor run in alternation, each as a whole (the same work, as long, timed
            # as often): a shared machine's load hits both alike, and neither gets the minimum of
            # more or shorter timings than the other.
            seconds, repeats = fastest_of(lambda: explain(clf, x, key, params=params), run_floor,
                                          args.repeats, args.min_seconds, MAX_REPEATS)
            per_image = seconds / len(x)
            row = {"model": model_name, "weights": weights, "method": key, "images": len(x), "repeats": repeats,
                   "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
                   "seconds_per_image": per_image}
            if key == "lrp" and (work := lrp_convolution_work(clf, x)) is not None:
                row["rule_convolution_work_over_floor"] = work
            if plan is not None:
                row["floor_folded"] = folded
                floor = min(floor_runs) / len(x)
                row.update({
                    "passes": [{"kind": k, "size": s, "count": round(c, 2), "floor_batch": unit.batch(k, s, cap)}
                               for (k, s, c), cap in zip(plan, caps)],
                    "floor_seconds_per_image": floor,
                    # the same passes from the timings that picked the batch sizes (each pass
                    # kind timed alone, before the method: a cross-check of the floor)
                    "floor_from_batch_size_timings": sum(count * unit.cost(kind, size, cap)
                                                    for (kind, size, count), cap in zip(plan, caps)),
                    "ratio_to_floor": per_image / floor,
                })
            if key in CAM_FAMILY and not args.no_reference:
                out = explain(clf, x, key, params=params)
                their, ours, maps = pytorch_grad_cam_time(
                    key, clf, params["layer"], x, [e.target for e in out], repeats,
                    lambda: explain(clf, x, key, params=params))
                if their is not None:
                    row["seconds_per_image"] = per_image = min(per_image, ours)
                    if "floor_seconds_per_image" in row:
                        row["ratio_to_floor"] = per_image / row["floor_seconds_per_image"]
                    row["pytorch_grad_cam_seconds_per_image"] = their
                    row["speedup_vs_pytorch_grad_cam"] = their / per_image
                    row["min_pearson_vs_pytorch_grad_cam"] = min(
                        pearson(e.saliency.numpy(), m) for e, m in zip(out, maps))
            rows.append(row)
            logger.info("%s", row)
    return {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "threads": args.threads, "machine": platform.machine(), "processor": platform.processor(),
        "huge_pages": HUGE_PAGES, "heap_kept": HEAP_KEPT,
        "repeats": args.repeats, "min_seconds": args.min_seconds,
        "versions": library_versions(), "rows": rows,
    }


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def write_results(result: dict, text: str, out: Path, name: str | None, prefix: str) -> Path:
    """``result`` as ``out/<name>.json`` and ``text`` as ``out/<name>.md`` (default name:
    ``<prefix>-<UTC time of the run>``); returns the Markdown file's path."""
    out.mkdir(parents=True, exist_ok=True)
    stem = name or f"{prefix}-" + result["when"].replace(":", "").replace("-", "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(text)
    return out / f"{stem}.md"


def markdown(result: dict) -> str:
    lines = [
        f"# Explainer benchmark ({result['when']})",
        "",
        f"Device: {result['device']}, torch threads: {result['threads']}"
        + ("" if result.get("huge_pages") is None else
           f", CPU tensors on huge pages: {'yes' if result['huge_pages'] else 'no'} (THP_MEM_ALLOC_ENABLE)")
        + ("" if result.get("heap_kept") is None else
           f", freed heap memory kept (glibc malloc thresholds, explain.cpu_memory): {'yes' if result['heap_kept'] else 'no'}")
        + "; versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        "Seconds per image of `explain()` on a batch, the fastest of *runs* timed runs; *floor*: the "
        "same passes for the same images through the plain model, each kind at its best batch size, run "
        "as a whole after each run of the method, the fastest of as many runs; *pgc*: pytorch-grad-cam "
        "on the same batch and layer (maps compared by Pearson).",
        "",
        "Passes (plain passes through the unmodified model, parameters frozen): *fwd* forward without "
        "gradient; *fwdbwd→layer* forward, then backward from the target logit to the method's layer; "
        "*fwdbwd→input* the same down to the pixels; *bwd→input* that backward alone; *fwd+attn* a ViT "
        "forward with the attention maps materialised; *fwdbwd→attn* that forward, then backward to every "
        "block's attention map; *bwd→attn* that backward alone; *bwd→attn[-1]* backward alone to the last "
        "block's attention map. Why each method needs its passes: `pass_plan` in benchmarks/bench.py. "
        "*norms folded*: the method runs its passes with the batch norms folded into the convolutions "
        "(explain.core.folding), and so do the floor's.",
        "",
        "| model | weights | method | s/image | runs | passes/image | floor s/image | ratio to floor | pgc s/image | speed-up vs pgc | Pearson vs pgc |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        passes = " + ".join(pass_label(p["kind"], p["size"], p["count"]) for p in r.get("passes", [])) or "n/a"
        if r.get("floor_folded"):
            passes += ", norms folded"
        def f(key, fmt="{:.3f}"):
            return fmt.format(r[key]) if key in r else ""
        lines.append(
            f"| {r['model']} | {r['weights']} | {r['method']} | {f('seconds_per_image', '{:.4g}')} | {r.get('repeats', '')} | {passes} | "
            f"{f('floor_seconds_per_image', '{:.4g}')} | {f('ratio_to_floor', '{:.2f}')} | "
            f"{f('pytorch_grad_cam_seconds_per_image', '{:.4g}')} | {f('speedup_vs_pytorch_grad_cam', '{:.2f}×')} | "
            f"{f('min_pearson_vs_pytorch_grad_cam', '{:.4f}')} |"
        )
    work = [r for r in result["rows"] if r.get("rule_convolution_work_over_floor")]
    if work:
        lines += ["", "LRP on a CNN: its rules' convolutions need " + ", ".join(
            f"{r['rule_convolution_work_over_floor']:.2f}× ({r['model']})" for r in work)
            + " the multiply-adds of the floor's passes: z⁺ runs over x⁺ and x⁻ where a convolution's "
            "input has negative entries, so that is the ratio to the floor its convolutions alone give "
            "where time follows multiply-adds (`lrp_convolution_work` in benchmarks/bench.py)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--methods", nargs="+", help="method keys (default: every method of the model's family)")
    parser.add_argument("--images", type=int, default=4, help="photos per batch")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats at least (the fastest counts)")
    parser.add_argument("--min-seconds", type=float, default=3.0, dest="min_seconds",
                        help=f"repeat a method until its runs took this long together (at most {MAX_REPEATS} runs)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], dest="batch_sizes",
                        help="batch sizes tried for the floor")
    parser.add_argument("--param", action="append", metavar="METHOD.NAME=VALUE",
                        help="method parameter override, e.g. rise.masks=500")
    parser.add_argument("--quick", action="store_true", help="RISE with 256 masks (unless set by --param)")
    parser.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-reference", action="store_true", help="skip pytorch-grad-cam")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="results file stem (default: bench-<timestamp>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    text = markdown(result)
    logger.info("results written to %s", write_results(result, text, args.out, args.name, "bench"))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
