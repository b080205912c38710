"""``manage.py explain IMAGE --model NAME --method KEY``: one explanation from the command line.

A thin shell over :func:`explain.core.engine.explain` (no database): prints the top-5 classes
and the explained one, and optionally writes an overlay PNG, the map as ``.npy`` at the
original image's size, or one JSON object.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from explain.core import zoo
from explain.core.engine import explain
from explain.core.imaging import load_image, preprocess
from explain.core.registry import get_method_class, method_keys


def jet(values: np.ndarray) -> np.ndarray:
    """``H×W`` values in [0, 1] → ``H×W×3`` RGB in [0, 1] on a jet-like blue–cyan–yellow–red ramp."""
    v = np.clip(values, 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.concatenate([r, g, b], axis=-1)


def overlay(image_rgb: np.ndarray, saliency01: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The map's colours blended over the image (``uint8`` ``H×W×3``)."""
    base = image_rgb.astype(np.float32) / 255.0
    blended = (1 - opacity) * base + opacity * jet(saliency01)
    return (np.clip(blended, 0, 1) * 255).round().astype(np.uint8)


def parse_params(items: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"--param expects NAME=VALUE, got {item!r}")
        params[name.strip()] = value.strip()
    return params


class Command(BaseCommand):
    help = "Explain one image with one saliency method; prints the top-5 classes and the explained class."

    def add_arguments(self, parser):
        parser.add_argument("image", type=Path, help="image file (JPEG, PNG, …)")
        parser.add_argument("--model", required=True, help=f"built-in model: {', '.join(zoo.BUILTIN_MODELS)}")
        parser.add_argument("--method", required=True, help="method key (see explain.core.registry.method_keys())")
        parser.add_argument("--enhance", action="store_true", help="apply the sliding-window enhancement")
        parser.add_argument("--target", type=int, default=None, help="class index to explain (default: top-1)")
        parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="method parameter (repeatable)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", type=Path, help="write an overlay PNG of the map over the image")
        parser.add_argument("--save-npy", type=Path, dest="save_npy",
                            help="write the map (float32 in [0, 1]) at the original image's size")
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    def handle(self, *args, image, model, method, enhance, target, param, seed, out, save_npy, **options):
        if model not in zoo.BUILTIN_MODELS:
            raise CommandError(f"unknown model {model!r}; built-in models are {', '.join(zoo.BUILTIN_MODELS)}")
        try:
            get_method_class(method)
        except ValueError:
            raise CommandError(f"unknown method {method!r}; choose one of {', '.join(method_keys())}") from None
        params = parse_params(param)
        try:
            classifier = zoo.load_classifier(model)
            picture = load_image(image)
            x, geometry = preprocess(picture, classifier)
            if target is not None and not 0 <= target < classifier.num_classes:
                raise ValueError(f"--target {target} is out of range: {model} has {classifier.num_classes} classes")
            [result] = explain(classifier, x[None], method, targets=None if target is None else [target],
                               params=params, enhance=enhance, seed=seed)
        except ValueError as error:   # ImageError, WeightsMissing and bad parameters are ValueErrors
            raise CommandError(str(error)) from None

        sal = result.saliency.numpy()
        span = float(sal.max() - sal.min())
        sal01 = (sal - sal.min()) / span if span > 0 else np.zeros_like(sal)
        original = None
        if save_npy is not None or out is not None:
            original = np.clip(geometry.to_original(sal01), 0, 1).astype(np.float32)
        if save_npy is not None:
            np.save(save_npy, original)
        if out is not None:
            from PIL import Image

            Image.fromarray(overlay(np.asarray(picture), original)).save(out)

        names = classifier.class_names
        top5 = [{"index": i, "name": names[i], "probability": p} for i, p in result.top(5)]
        explained = {"index": result.target, "name": names[result.target],
                     "probability": float(result.probabilities[result.target])}
        if options.get("json"):
            payload = {
                "top5": top5, "target": explained, "method": result.manifest["method"],
                "params": result.manifest["params"], "enhance": result.manifest["enhance"],
                "seconds": result.manifest["seconds"], "manifest": result.manifest,
            }
            self.stdout.write(json.dumps(payload))
            return
        self.stdout.write(f"{model}: top-5")
        for row in top5:
            self.stdout.write(f"  {row['index']:4d}  {row['name']:<30s} {row['probability']:.4f}")
        self.stdout.write(
            f"explained class {explained['index']} ({explained['name']}) with {result.manifest['method']}"
            f"{' + enhancement' if enhance else ''} in {result.manifest['seconds']:.2f} s"
        )
        if out is not None:
            self.stdout.write(f"overlay: {out}")
        if save_npy is not None:
            self.stdout.write(f"map: {save_npy} ({original.shape[0]}×{original.shape[1]}, float32 in [0, 1])")
