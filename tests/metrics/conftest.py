"""Shared pieces of the metric-family tests: a tiny seeded CNN, a gradient explainer, a sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from experiments.core.datasets.base import ObjectAnnotation, Sample

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tiny_cnn(num_classes: int = 5, seed: int = 0, channels: int = 3) -> nn.Module:
    """A few seeded conv layers: B×3×H×W → logits B×num_classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes),
    ).eval()


def gradient_explainer(module: nn.Module, batch: torch.Tensor, targets) -> torch.Tensor:
    """|∂ logit_t / ∂ x| summed over channels: B×H×W (Simonyan et al. 2014)."""
    x = batch.detach().clone().requires_grad_(True)
    logits = module(x)
    picked = logits[torch.arange(len(x)), torch.as_tensor(list(targets))]
    (grad,) = torch.autograd.grad(picked.sum(), x)
    return grad.abs().sum(dim=1).detach()


def synthetic_sample(size: int = 40, seed: int = 0, label: int = 1) -> Sample:
    rng = np.random.default_rng(seed)
    array = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    foreground = np.zeros((size, size), dtype=bool)
    foreground[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
    return Sample(key=f"synthetic-{seed}", labels=(label,), size=(size, size),
                  objects=(ObjectAnnotation(label=label, box=(5.0, 5.0, 25.0, 30.0)),),
                  loader=lambda: Image.fromarray(array), foreground_loader=lambda: foreground)


@pytest.fixture
def model() -> nn.Module:
    return tiny_cnn()
