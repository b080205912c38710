"""Explainer benchmark: seconds per image against the floor of the passes each method needs.

``./run bench`` (``python -m benchmarks.bench``)::

    python -m benchmarks.bench --models resnet18 vgg19 --methods gradcam gradcampp --images 4
    python -m benchmarks.bench --quick            # a few minutes: small N, few images

For every (model, method): the seconds per image of :func:`explain.core.engine.explain` on a
batch of ``--images`` photos; the forward/backward passes the method needs per image (its
*pass plan*); the *floor*, the cost of exactly those passes measured in the same run at the
best batch size; and their ratio. For the gradient CAM family it also times
pytorch-grad-cam on the same batch and layer, checks that the maps are equal (Pearson ≥ 0.999
after min-max normalisation) and reports the speed ratio. Results go to
``benchmarks/results/bench-<timestamp>.{json,md}`` and ``<name>.{json,md}`` (``--name``,
default ``latest``). Timings on a shared machine vary: the method, its floor and
pytorch-grad-cam are timed in alternation and the fastest of ``--repeats`` runs counts.
Models without real weights on disk are benchmarked with random weights (the cost is the same).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from explain.core import zoo
from explain.core.engine import explain, library_versions
from explain.core.methods.base import activations_and_gradients, layer_activations
from explain.core.registry import get_method_class, methods_for

logger = logging.getLogger("benchmarks.bench")
RESULTS = Path(__file__).resolve().parent / "results"
CAM_FAMILY = ("gradcam", "gradcampp", "xgradcam", "layercam")
DEFAULT_MODELS = ("efficientnet_lite0", "resnet18", "vgg19", "vit_b_16")


# -- inputs ---------------------------------------------------------------------------------
def photos(classifier, count: int) -> torch.Tensor:
    """``count`` normalised photos from scikit-image (repeated if more are asked for)."""
    import skimage.data
    from PIL import Image

    from explain.core.imaging import preprocess

    names = ["chelsea", "coffee", "astronaut", "rocket", "cat", "motorcycle_left"]
    out = []
    for i in range(count):
        name = names[i % len(names)]
        pixels = getattr(skimage.data, name)()
        if isinstance(pixels, tuple):
            pixels = pixels[0]
        out.append(preprocess(Image.fromarray(pixels).convert("RGB"), classifier)[0])
    return torch.stack(out).to(classifier.device)


def get_classifier(name: str, device):
    try:
        return zoo.load_classifier(name, device=device), "real"
    except zoo.WeightsMissing:
        return zoo.random_classifier(name, seed=0, device=device), "random"


# -- pass plans -----------------------------------------------------------------------------
def pass_plan(key: str, classifier, params: dict, x: torch.Tensor) -> list[tuple[str, int, float]] | None:
    """The passes per image ``(kind, input size, count)``; kind ``fwd`` (no gradient) or
    ``fwdbwd`` (forward, then backward from the logit to the method's layer). ``None`` where
    this benchmark does not know the method's passes."""
    s = int(x.shape[-1])
    if key in CAM_FAMILY:
        return [("fwdbwd", s, 1)]             # the prediction comes from the same forward pass
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


def _channels(classifier, layer, x) -> int:
    acts, _ = layer_activations(classifier, x[:1], layer)
    return int(acts.shape[1])


class UnitCosts:
    """Seconds per image of one pass kind at one input size, the best over batch sizes."""

    def __init__(self, classifier, layer: str | None, x: torch.Tensor, batch_sizes, repeats: int):
        self.classifier, self.layer, self.x = classifier, layer, x
        self.batch_sizes, self.repeats = batch_sizes, repeats
        self.cache: dict[tuple[str, int, int], tuple[float, int]] = {}

    def cost(self, kind: str, size: int, cap: int) -> float:
        """The best per-image time so far over ``--batch-sizes`` no larger than ``cap``, the
        number of such passes the batch holds (four images need four gradient passes: they
        cannot be batched by 32)."""
        key = (kind, size, cap)
        if key not in self.cache:
            self.cache[key] = self._measure(kind, size, self._sizes(cap))
        return self.cache[key][0]

    def refresh(self, kind: str, size: int, cap: int) -> None:
        """Time the unit again at every candidate batch size (interleaved with the method's
        runs, so that both see the same machine load); the minimum is kept."""
        key = (kind, size, cap)
        again = self._measure(kind, size, self._sizes(cap), warm=False)
        self.cache[key] = min(self.cache[key], again)

    def batch(self, kind: str, size: int, cap: int) -> int:
        return self.cache[(kind, size, cap)][1]

    def _sizes(self, cap: int) -> list[int]:
        return sorted({min(b, cap) for b in self.batch_sizes})

    def _measure(self, kind, size, batch_sizes, warm=True):
        best = (math.inf, 0)
        module = self.classifier.module
        for b in batch_sizes:
            # large inputs: fewer images, as the methods do (same pixel budget)
            if size > self.x.shape[-1]:
                b = max(1, b * (self.x.shape[-1] ** 2) // (size * size))
            xb = self.x[torch.arange(b) % len(self.x)]
            if size != xb.shape[-1]:
                xb = torch.nn.functional.interpolate(xb, size=(size, size), mode="bilinear", align_corners=False)
            targets = torch.zeros(b, dtype=torch.long, device=xb.device)

            def once():
                if kind == "fwd":
                    with torch.no_grad():
                        module(xb.contiguous(memory_format=torch.channels_last) if xb.device.type == "cpu" else xb)
                else:
                    activations_and_gradients(self.classifier, xb, targets, self.layer)
                _sync(xb.device)

            if warm:
                once()
            t = min(_timed(once) for _ in range(self.repeats)) / b
            if t < best[0]:
                best = (t, b)
        return best


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
        units = None
        for key in keys:
            method = get_method_class(key)
            params = method.resolve_params(clf, overrides.get(key, {}))
            logger.info("%s / %s ...", model_name, key)
            explain(clf, x[:1], key, params=params)              # warm-up (allocations, oneDNN kernels)
            plan, caps = pass_plan(key, clf, params, x), []
            if plan is not None:
                layer = params.get("layer") or clf.default_layer("tokens" if clf.family == "vit" else "cam")
                if units is None or units.layer != layer:
                    units = UnitCosts(clf, layer, x, args.batch_sizes, 1)
                caps = [max(1, math.ceil(count * len(x))) for _, _, count in plan]
                for (kind, size, _), cap in zip(plan, caps):
                    units.cost(kind, size, cap)                  # picks the best batch size
            # Method and floor timed in alternation: a shared machine's load hits both alike.
            seconds = math.inf
            for _ in range(args.repeats):
                seconds = min(seconds, _timed(lambda: explain(clf, x, key, params=params)))
                for (kind, size, _), cap in zip(plan or [], caps if plan else []):
                    units.refresh(kind, size, cap)
            per_image = seconds / len(x)
            row = {"model": model_name, "weights": weights, "method": key, "images": len(x),
                   "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
                   "seconds_per_image": per_image}
            if plan is not None:
                floor = sum(count * units.cost(kind, size, cap) for (kind, size, count), cap in zip(plan, caps))
                row.update({
                    "passes": [{"kind": k, "size": s, "count": round(c, 2), "floor_batch": units.batch(k, s, cap)}
                               for (k, s, c), cap in zip(plan, caps)],
                    "floor_seconds_per_image": floor,
                    "ratio_to_floor": per_image / floor,
                })
            if key in CAM_FAMILY and not args.no_reference:
                out = explain(clf, x, key, params=params)
                their, ours, maps = pytorch_grad_cam_time(
                    key, clf, params["layer"], x, [e.target for e in out], args.repeats,
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
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": args.threads, "machine": platform.machine(), "processor": platform.processor(),
        "versions": library_versions(), "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Explainer benchmark ({result['when']})",
        "",
        f"Device: {result['device']}, torch threads: {result['threads']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        "Seconds per image of `explain()` on a batch; *floor*: the same passes measured alone at the best "
        "batch size; *pgc*: pytorch-grad-cam on the same batch and layer (maps compared by Pearson).",
        "",
        "| model | weights | method | s/image | passes/image | floor s/image | ratio to floor | pgc s/image | speed-up vs pgc | Pearson vs pgc |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        passes = " + ".join(f"{p['count']:g}×{p['kind']}@{p['size']}" for p in r.get("passes", [])) or "n/a"
        def f(key, fmt="{:.3f}"):
            return fmt.format(r[key]) if key in r else ""
        lines.append(
            f"| {r['model']} | {r['weights']} | {r['method']} | {f('seconds_per_image')} | {passes} | "
            f"{f('floor_seconds_per_image')} | {f('ratio_to_floor', '{:.2f}')} | "
            f"{f('pytorch_grad_cam_seconds_per_image')} | {f('speedup_vs_pytorch_grad_cam', '{:.2f}×')} | "
            f"{f('min_pearson_vs_pytorch_grad_cam', '{:.4f}')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--methods", nargs="+", help="method keys (default: every method of the model's family)")
    parser.add_argument("--images", type=int, default=4, help="photos per batch")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (the fastest counts)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32], dest="batch_sizes",
                        help="batch sizes tried for the floor")
    parser.add_argument("--param", action="append", metavar="METHOD.NAME=VALUE",
                        help="method parameter override, e.g. rise.masks=500")
    parser.add_argument("--quick", action="store_true", help="RISE with 256 masks (unless set by --param)")
    parser.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-reference", action="store_true", help="skip pytorch-grad-cam")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="latest", help="results file stem (besides a timestamped copy)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = result["when"].replace(":", "").replace("-", "")
    text = markdown(result)
    for stem in (f"bench-{stamp}", args.name):
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2))
        (args.out / f"{stem}.md").write_text(text)
    logger.info("results written to %s", args.out)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
