"""Explain a torchvision classifier from a plain Python session (no Django, nothing downloaded).

    python docs/examples/explain_torchvision.py [IMAGE]

A ResNet-18 with seeded random weights stands in for a lab's own model; pass ``weights=`` to the
builder (or ``load_state_dict``) for a trained one. Prints, per method, the top class and where
the map puts its mass.
"""
from __future__ import annotations

import sys

import torch
import torchvision

from explain.core import explain, load_image, methods_for, preprocess, wrap_model


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    clf = wrap_model(model, name="resnet18 (random)", class_names=[f"label {i}" for i in range(10)])
    print("default layers:", clf.default_layers)
    if len(argv) > 1:
        x, _ = preprocess(load_image(argv[1]), clf)
    else:
        # a synthetic photo: a bright square on a dark background, in the model's input space
        pixels = torch.full((1, 3, 224, 224), 0.1)
        pixels[:, :, 60:160, 80:180] = 0.9
        x = clf.normalize(pixels)
    for key in ("gradcam", "layercam", "scorecam"):
        assert key in methods_for(clf)
        [e] = explain(clf, x, key)
        row, col = divmod(int(e.saliency.argmax()), e.saliency.shape[1])
        print(f"{key:10s} target={clf.class_names[e.target]!r} map={tuple(e.saliency.shape)} "
              f"peak=({row}, {col}) finite={bool(torch.isfinite(e.saliency).all())}")


if __name__ == "__main__":
    main(sys.argv)
