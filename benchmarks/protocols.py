"""Protocol throughput: images per minute per method under each evaluation protocol, against the
floor of the model passes the protocol needs.

``./run bench-protocols`` (``python -m benchmarks.protocols``)::

    python -m benchmarks.protocols                                   # every protocol with model passes
    python -m benchmarks.protocols --protocols thesis-v1 --methods gradcam msgcam --images 2

For every (protocol, method, plain or enhanced), the ``--images`` photos are run through the
protocol's family runner as a worker's shard runs them: in groups of
:func:`experiments.core.metrics.image_group_size` images whose model passes share forward
batches (:func:`~experiments.core.metrics.run_protocol_many`). The time splits into the explainer's (the maps: the method's own cost, which
``./run bench`` measures against its floor) and the evaluation's (the rest: the protocol's
perturbed inputs and model passes). The evaluation's *floor* is the family's declared model
passes per image (:meth:`MetricFamily.cost`, the cost prior of the estimates) times the
per-image seconds of one forward pass at the best batch size of the run (found first); the
*ratio* is floor ÷ evaluation seconds (1.0: nothing but the passes). Families without model
passes (complexity, random-logit) report their evaluation seconds only.

A shared machine's speed drifts by tens of per cent within a minute, so each row runs its
protocol ``--runs`` times (3): the first computes the maps as a worker does, the later ones
evaluate the same contexts again with their maps cached. The forward pass is timed again
beside every run, and both the evaluation and the floor's pass count at their fastest.

A floor counts the work a protocol must do besides its passes, timed alone
(:data:`OTHER_WORK_FLOORS`), so the ratio measures the runner's overhead around that work:

* ROAD solves one sparse system per removal (its noisy linear imputation): each solve is timed on
  the row's own masks, with its system built beforehand;
* infidelity draws its ``T`` Gaussian perturbations (``T·C·H·W`` normals, the Monte-Carlo sample
  of its expectation): the draws are timed with the protocol's own generator, seed and precision.

The passes-only ratio is reported too.

The photos have no ground truth: each one's label is the model's clean top-1, which is what
a protocol that explains the target class then explains. Results go to
``benchmarks/results/<name>.{json,md}`` (default ``protocols-<timestamp>``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from explain import cpu_memory

HUGE_PAGES, HEAP_KEPT = cpu_memory.apply()      # before any tensor exists: as the site runs

from experiments.core.metrics import ImageContext, get_family, image_group_size, run_protocol_many  # noqa: E402 - after the allocator settings
from experiments.core.metrics.infidelity import gaussian_perturbations  # noqa: E402 - after the allocator settings
from experiments.core.metrics.road import imputation_system, removal_masks, solve_imputation  # noqa: E402 - after the allocator settings
from experiments.core.protocols import get_protocol, protocol_names  # noqa: E402 - after the allocator settings
from explain.core.engine import explain, library_versions  # noqa: E402 - after the allocator settings
from explain.core.registry import methods_for  # noqa: E402 - after the allocator settings

from .bench import RESULTS, device_name, get_classifier, photo_images  # noqa: E402 - after the allocator settings

logger = logging.getLogger("benchmarks.protocols")
#: Families whose data needs the photos cannot meet (boxes, masks), or that re-run the model's
#: randomisation cascade (sanity: its cost is the explainer's, many times over).
SKIPPED_FAMILIES = {"pointing", "segmentation", "sanity"}
DEFAULT_METHODS = ("gradcam", "msgcam")


@dataclass(frozen=True)
class Photo:
    """A bundled photo as a data-set sample: its key and (the model's clean top-1) label."""

    key: str
    label: int


def default_protocols() -> list[str]:
    return [n for n in protocol_names() if get_protocol(n).metric not in SKIPPED_FAMILIES]


class TimedExplainer:
    """The explainer a worker hands a family, with the seconds it took summed up."""

    def __init__(self, classifier, key: str, enhance: bool, params: dict):
        self.classifier, self.key, self.enhance, self.params = classifier, key, enhance, params
        self.seconds = 0.0

    def __call__(self, module, batch, targets):
        started = time.perf_counter()
        maps = explain(self.classifier, batch, self.key, targets=list(targets), params=self.params,
                       enhance=self.enhance or None)
        out = torch.stack([e.saliency for e in maps])
        _sync(batch.device)
        self.seconds += time.perf_counter() - started
        return out

    def top1_map(self, module, x):
        """``(map, class)`` of a ``1×C×H×W`` input's top-1 class, named by the explainer's forward
        pass (:data:`experiments.core.metrics.base.Explainer`), as in a worker's run: no extra clean
        pass is timed against the protocol."""
        started = time.perf_counter()
        [result] = explain(self.classifier, x, self.key, targets=None, params=self.params, enhance=self.enhance or None)
        _sync(x.device)
        self.seconds += time.perf_counter() - started
        return result.saliency, result.target


def road_solve_seconds(protocol, evaluated) -> float:
    """Seconds per image of ROAD's sparse solves alone, on the masks of the maps the protocol
    evaluated (``[(context, its rows)]``: each row carries its map); each system is built first,
    untimed."""
    total = 0.0
    for ctx, rows in evaluated:
        pixels = ctx.pixels(protocol.preprocessing).detach().cpu().double().numpy()
        for row in rows:
            for mask in removal_masks(row["saliency"], protocol):
                if mask.any():
                    matrix, b, _ = imputation_system(pixels, mask)
                    started = time.perf_counter()
                    solve_imputation(matrix, b)
                    total += time.perf_counter() - started
    return total / len(evaluated)


def infidelity_draw_seconds(protocol, evaluated) -> float:
    """Seconds per image of infidelity's perturbation draws alone, each image's own (its seed and
    index, the protocol's sample count, σ and precision)."""
    total = 0.0
    for ctx, _ in evaluated:
        shape = tuple(ctx.pixels(protocol.preprocessing).shape)
        started = time.perf_counter()
        gaussian_perturbations(shape, samples=protocol.samples, sigma=protocol.sigma, seed=ctx.seed,
                               index=ctx.index, dtype=protocol.noise)
        total += time.perf_counter() - started
    return total / len(evaluated)


#: Per-image work other than model passes that a family's protocol cannot skip, timed alone:
#: ``metric → f(protocol, [(context, its rows)]) → seconds``.
OTHER_WORK_FLOORS = {"road": road_solve_seconds, "infidelity": infidelity_draw_seconds}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def forward_seconds_per_image(classifier, size: int, batch_sizes, repeats: int) -> tuple[float, int]:
    """Fastest seconds per image of a no-gradient forward pass, and the batch size it came at."""
    best = (float("inf"), 0)
    with torch.no_grad():
        for b in batch_sizes:
            x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b)).to(classifier.device)
            classifier.module(x)                      # warm-up
            _sync(classifier.device)
            for _ in range(repeats):
                started = time.perf_counter()
                classifier.module(x)
                _sync(classifier.device)
                per_image = (time.perf_counter() - started) / b
                best = min(best, (per_image, b))
    return best


def forward_seconds_at(classifier, size: int, batch_size: int, repeats: int) -> float:
    """Fastest seconds per image of a no-gradient forward pass at one batch size."""
    return forward_seconds_per_image(classifier, size, [batch_size], repeats)[0]


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    classifier, weights = get_classifier(args.model, device)
    photos = photo_images(args.images)
    methods = [m for m in args.methods if m in set(methods_for(classifier))]
    skipped = sorted(set(args.methods) - set(methods))
    if skipped:
        logger.warning("%s cannot run %s; skipped", args.model, ", ".join(skipped))
    params = {"rise": {"masks": args.rise_masks}}

    rows, floors = [], {}
    for name in args.protocols:
        protocol = get_protocol(name)
        family = get_family(protocol.metric)
        size = protocol.preprocessing.size
        if size not in floors:
            floors[size] = forward_seconds_per_image(classifier, size, args.batch_sizes, args.repeats)
        passes = family.cost(protocol).model_passes
        # Labels (the clean top-1 under this protocol's preprocessing), outside the timing.
        samples = []
        for photo_key, image in photos:
            probe = ImageContext(model=classifier.module, mean=classifier.mean, std=classifier.std,
                                 image=image, device=device)
            samples.append((Photo(photo_key, probe.top1(protocol.preprocessing)), image))

        # Images go together as a worker's shard takes them (their model passes share batches).
        group = image_group_size([protocol], device)
        groups = [list(enumerate(samples))[i:i + group] for i in range(0, len(samples), group)]

        def contexts_of(explainer, items):
            return [ImageContext(model=classifier.module, mean=classifier.mean, std=classifier.std,
                                 sample=sample, image=image, explainer=explainer,
                                 num_classes=len(classifier.class_names), seed=0, index=index, device=device)
                    for index, (sample, image) in items]

        def evaluate(contexts):
            """The protocol on ``contexts``, as a worker's shard runs it: ``[(context, its rows)]``."""
            results = run_protocol_many(protocol, contexts)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return list(zip(contexts, results))

        for key in methods:
            for enhance in (False, True):
                # One untimed group first: lazy imports, allocator and kernel warm-up.
                evaluate(contexts_of(TimedExplainer(classifier, key, enhance, params.get(key, {})), groups[0]))
                explainer = TimedExplainer(classifier, key, enhance, params.get(key, {}))
                context_groups = [contexts_of(explainer, items) for items in groups]

                def timed_run():
                    """Every group evaluated once: the rows, and the seconds per image of all but the
                    explainer's share (the maps, computed in the first run and cached after it)."""
                    spent, started = explainer.seconds, time.perf_counter()
                    evaluated = [pair for contexts in context_groups for pair in evaluate(contexts)]
                    _sync(device)
                    seconds = time.perf_counter() - started - (explainer.seconds - spent)
                    return evaluated, max(seconds, 1e-9) / len(photos)

                # The forward pass is timed again beside every run of the row, at the best batch
                # size: a shared machine's speed drifts, and the ratio must compare the row with
                # the passes as fast as they ran beside it. The first run computes the maps, as a
                # worker does; the later ones run the protocol again on the same contexts, whose
                # maps are cached, and the fastest evaluation of all the runs counts.
                def forward_now() -> float:
                    return forward_seconds_at(classifier, size, floors[size][1], args.repeats)

                forwards = [forward_now()]
                evaluated, first = timed_run()
                explain_s = explainer.seconds / len(photos)        # the maps: the first run's only
                evaluations = [first]
                forwards.append(forward_now())
                for _ in range(args.runs - 1):
                    evaluations.append(timed_run()[1])
                    forwards.append(forward_now())
                forward = min(forwards)
                evaluation = min(evaluations)
                other_work = (min(OTHER_WORK_FLOORS[protocol.metric](protocol, evaluated) for _ in range(args.runs))
                              if protocol.metric in OTHER_WORK_FLOORS else 0.0)
                floor = passes * forward + other_work
                per_image = explain_s + evaluation
                rows.append({
                    "protocol": name, "metric": protocol.metric, "method": key, "enhanced": enhance, "image_group": group,
                    "images_per_minute": 60.0 / per_image, "seconds_per_image": per_image, "explain_seconds": explain_s,
                    "evaluation_seconds": evaluation, "evaluation_runs": evaluations,
                    "model_passes": passes, "forward_seconds": forward,
                    "other_work_seconds": other_work, "floor_seconds": floor if passes else None,
                    "ratio": floor / evaluation if passes else None,
                    "passes_only_ratio": passes * forward / evaluation if passes else None,
                })
                logger.info("%-24s %-10s %-8s %6.1f img/min  eval %.3f s  floor %s", name, key,
                            "enhanced" if enhance else "plain", 60.0 / per_image, evaluation,
                            f"{floor:.3f} s" if passes else "-")
    return {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.node(), "device": device_name(device), "threads": args.threads,
        "model": args.model, "weights": weights, "images": args.images,
        "forward_floor": {str(s): {"seconds_per_image": t, "batch_size": b} for s, (t, b) in floors.items()},
        "versions": library_versions(), "huge_pages": HUGE_PAGES, "heap_kept": HEAP_KEPT,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [f"# Protocol throughput: {result['model']} ({result['weights']} weights) on {result['device']}, "
             f"{result['threads']} threads, {result['images']} photos, {result['when']}", ""]
    for size, f in result["forward_floor"].items():
        lines.append(f"One forward pass at {size}×{size}: {f['seconds_per_image'] * 1e3:.2f} ms per image "
                     f"(best batch {f['batch_size']}); the floors use the pass as timed beside each row (forward ms).")
    lines += ["", "| protocol | method | maps | images together | images/min | explain s/img | evaluation s/img | passes | "
              "forward ms | other work s/img | floor s/img | floor ÷ evaluation | passes only ÷ evaluation |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def fmt(value, spec):
        return "–" if value is None else format(value, spec)

    for r in result["rows"]:
        other_work = r.get("other_work_seconds") or None
        lines.append(f"| {r['protocol']} | {r['method']} | {'enhanced' if r['enhanced'] else 'plain'} | {r['image_group']} | "
                     f"{r['images_per_minute']:.1f} | {r['explain_seconds']:.3f} | {r['evaluation_seconds']:.3f} | "
                     f"{r['model_passes']:g} | {r['forward_seconds'] * 1e3:.2f} | {fmt(other_work, '.3f')} | "
                     f"{fmt(r['floor_seconds'], '.3f')} | {fmt(r['ratio'], '.2f')} | {fmt(r.get('passes_only_ratio'), '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench-protocols", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--protocols", nargs="+", default=None,
                        help="protocol names (default: every protocol the photos can run)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each forward batch size")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of each row's protocol (the first computes the maps); the fastest evaluation counts")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32, 64], dest="batch_sizes")
    parser.add_argument("--rise-masks", type=int, default=256, dest="rise_masks")
    parser.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="results file stem (default: protocols-<timestamp>)")
    args = parser.parse_args(argv)
    args.protocols = args.protocols or default_protocols()
    unknown = [p for p in args.protocols if p not in protocol_names()]
    if unknown:
        parser.error(f"unknown protocol(s) {unknown}; known: {protocol_names()}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args)
    text = markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or "protocols-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    print(f"written to {args.out / stem}.{{json,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
