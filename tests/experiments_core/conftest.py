"""Shared fixtures of the experiments-core tests: tiny seeded models, no database."""
from __future__ import annotations

import pytest
import torch
from torch import nn



def tiny_cnn(num_classes: int = 5, seed: int = 0) -> nn.Module:
    """A small seeded CNN with a norm layer: input B×3×H×W → logits B×num_classes."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )
    with torch.no_grad():  # non-trivial running statistics, so eval mode differs from train mode
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def model() -> nn.Module:
    return tiny_cnn()
