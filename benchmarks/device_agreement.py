"""Do a GPU worker's maps agree with the CPU's? ``python -m benchmarks.device_agreement``::

    python -m benchmarks.device_agreement --models efficientnet_lite0 resnet18 --images 2

For every (model, method), plain and with the enhancement for the gradient CAMs: the same
photos, targets (the CPU's top-1) and seed are explained on ``--device`` and on the CPU, and
the table gives

* the Pearson correlation of the two maps (lowest over the images) and their largest
  difference after dividing both by the CPU map's maximum;
* whether the device's batch gives the maps of its images one by one (the same two figures);
* whether the model came back unchanged on the device (parameters, buffers, gradients,
  training flags, hooks);
* how far rounding alone moves the method's map: the CPU map against the CPU map of the input
  scaled by ``1 + 1e-6`` (a method that amplifies rounding, such as LRP through a deep network
  with random weights, cannot agree across devices better than this);
* seconds per image on each device (one untimed warm-up first; for scale, not a benchmark).

Random methods draw their masks from a CPU generator, so both devices use the same masks;
the differences left are floating-point ones (the device's convolution and matrix kernels,
TF32 where PyTorch allows it: the flags are printed). Results go to
``benchmarks/results/<name>.{json,md}``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench import RESULTS, device_name, get_classifier, photos, write_results
from explain.core.engine import explain, library_versions
from explain.core.hooks import count_hooks
from explain.core.registry import get_method_class, methods_for

logger = logging.getLogger("benchmarks.device_agreement")
ENHANCED = ("gradcam", "gradcampp")
#: Enough masks to compare RISE's maps without the 4000-mask default's CPU time.
RISE_MASKS = 500
#: Relative change of the input that shows how much rounding alone moves a method's map.
NUDGE = 1e-6


def map_agreement(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> tuple[float, float]:
    """Lowest Pearson correlation and largest difference (relative to the reference's maximum)."""
    pearsons, diffs = [], []
    for a, b in zip(ours, reference):
        a, b = a.double().flatten(), b.double().flatten()
        if a.std() == 0 or b.std() == 0:
            pearsons.append(1.0 if torch.allclose(a, b) else 0.0)
        else:
            pearsons.append(float(np.corrcoef(a.numpy(), b.numpy())[0, 1]))
        diffs.append(float((a - b).abs().max() / max(float(b.abs().max()), 1e-12)))
    return min(pearsons), max(diffs)


def _state(module) -> tuple:
    return (
        {k: v.detach().clone() for k, v in module.state_dict().items()},
        [m.training for m in module.modules()],
        [(p.requires_grad, p.grad) for p in module.parameters()],
    )


def unchanged(module, before: tuple) -> bool:
    state, training, params = before
    same_state = all(torch.equal(v, state[k]) for k, v in module.state_dict().items())
    same_flags = [m.training for m in module.modules()] == training
    same_params = all(p.requires_grad == rg and p.grad is g for p, (rg, g) in zip(module.parameters(), params))
    return same_state and same_flags and same_params and count_hooks(module) == 0


def timed_maps(clf, x, key, targets, params, enhance) -> tuple[list[torch.Tensor], float]:
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = explain(clf, x, key, targets=targets, params=params, enhance=enhance, seed=0)
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    return [e.saliency for e in out], (time.perf_counter() - started) / len(x)


def compare(cpu_clf, dev_clf, x_cpu, x_dev, key, targets, enhance) -> dict:
    """One method's maps on the device against the CPU's, and the device's contract checks."""
    params = {"masks": RISE_MASKS} if key == "rise" else {}
    explain(dev_clf, x_dev[:1], key, targets=targets[:1], params=params, enhance=enhance)  # warm-up
    before = _state(dev_clf.module)
    dev_maps, dev_seconds = timed_maps(dev_clf, x_dev, key, targets, params, enhance)
    left_alone = unchanged(dev_clf.module, before)
    one_by_one = [timed_maps(dev_clf, x_dev[i:i + 1], key, targets[i:i + 1], params, enhance)[0][0]
                  for i in range(len(x_dev))]
    cpu_maps, cpu_seconds = timed_maps(cpu_clf, x_cpu, key, targets, params, enhance)
    nudged_maps, _ = timed_maps(cpu_clf, x_cpu * (1 + NUDGE), key, targets, params, enhance)
    pearson, diff = map_agreement(dev_maps, cpu_maps)
    nudged_pearson, _ = map_agreement(nudged_maps, cpu_maps)
    batch_pearson, batch_diff = map_agreement(dev_maps, one_by_one)
    return {
        "pearson_vs_cpu": pearson, "max_diff_vs_cpu": diff,
        "batch_pearson": batch_pearson, "batch_max_diff": batch_diff,
        "cpu_nudged_pearson": nudged_pearson,
        "model_unchanged": left_alone,
        "device_seconds_per_image": dev_seconds, "cpu_seconds_per_image": cpu_seconds,
    }


def run(args) -> dict:
    device = torch.device(args.device)
    rows = []
    for model_name in args.models:
        cpu_clf, weights = get_classifier(model_name, "cpu")
        dev_clf, _ = get_classifier(model_name, device)
        x_cpu = photos(cpu_clf, args.images)
        x_dev = x_cpu.to(device)
        with torch.no_grad():
            targets = cpu_clf.module(x_cpu).argmax(1).tolist()
            dev_targets = dev_clf.module(x_dev).argmax(1).tolist()
        keys = [k for k in (args.methods or methods_for(cpu_clf.family))
                if cpu_clf.family in get_method_class(k).families]
        cases = [(k, False) for k in keys] + [(k, True) for k in ENHANCED if k in keys and args.enhance]
        for key, enhance in cases:
            row = {"model": model_name, "weights": weights, "method": key, "enhance": enhance,
                   "images": len(x_cpu), "same_top1": dev_targets == targets}
            try:
                row.update(compare(cpu_clf, dev_clf, x_cpu, x_dev, key, targets, enhance))
            except Exception as error:      # one failing method must not hide the others' rows
                logger.exception("%s / %s failed", model_name, key)
                row["error"] = f"{type(error).__name__}: {error}"
            rows.append(row)
            logger.info("%s", row)
    return {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "versions": library_versions(), "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Device agreement ({result['when']})",
        "",
        f"Device: {result['device']} against the CPU ({result['cpu_threads']} threads); TF32 allowed: "
        f"matmul {result['tf32']['matmul']}, cuDNN {result['tf32']['cudnn']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        "Same photos, targets (the CPU's top-1) and seed on both; RISE with "
        f"{RISE_MASKS} masks. *max diff*: largest difference of the maps over the reference map's maximum; "
        "*batch*: the device's batch against its images one by one; *CPU, input ×(1+1e-6)*: the CPU map "
        "against the CPU map of the input scaled by 1 + 1e-6 (how far rounding alone moves the map).",
        "",
        "| model | method | same top-1 | Pearson vs CPU | max diff vs CPU | batch Pearson | batch max diff "
        "| Pearson CPU, input ×(1+1e-6) | model unchanged | device s/image | CPU s/image |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in result["rows"]:
        name = r["method"] + (" + enhance" if r["enhance"] else "")
        if "error" in r:
            lines.append(f"| {r['model']} ({r['weights']}) | {name} | {r['same_top1']} | failed: {r['error']} |")
            continue
        lines.append(
            f"| {r['model']} ({r['weights']}) | {name} | {r['same_top1']} | {r['pearson_vs_cpu']:.6f} | "
            f"{r['max_diff_vs_cpu']:.2e} | {r['batch_pearson']:.6f} | {r['batch_max_diff']:.2e} | "
            f"{r['cpu_nudged_pearson']:.6f} | {r['model_unchanged']} | {r['device_seconds_per_image']:.4f} | {r['cpu_seconds_per_image']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="device_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "resnet18", "vit_b_16"])
    parser.add_argument("--methods", nargs="+", help="method keys (default: every method of the model's family)")
    parser.add_argument("--images", type=int, default=2, help="photos per batch")
    parser.add_argument("--no-enhance", dest="enhance", action="store_false",
                        help=f"skip the enhanced rows ({', '.join(ENHANCED)})")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="results file stem (default: agreement-<timestamp>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = run(args)
    text = markdown(result)
    write_results(result, text, args.out, args.name, "agreement")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
