"""Tiny seeded models for the engine tests: weights do not matter, structure does."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from explain.core.handle import Classifier


def tiny_cnn(seed: int = 0, classes: int = 10) -> nn.Module:
    """conv–bn–relu–pool–conv–relu–gap–fc on 32×32 inputs; the CAM layer ``relu2`` is 16×16×16."""
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)),
        ("bn1", nn.BatchNorm2d(8)),
        ("relu1", nn.ReLU(inplace=True)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 16, 3, padding=1)),
        ("relu2", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flat", nn.Flatten()),
        ("fc", nn.Linear(16, classes)),
    ]))
    with torch.no_grad():
        model.bn1.running_mean.normal_(0, 0.1)
        model.bn1.running_var.uniform_(0.5, 1.5)
        model.bn1.weight.uniform_(0.5, 1.5)
        model.bn1.bias.normal_(0, 0.1)
        model.fc.weight.mul_(4)
    return model.eval()


def tiny_cnn_classifier(seed: int = 0) -> Classifier:
    model = tiny_cnn(seed)
    return Classifier(
        name="tiny-cnn", module=model, family="cnn",
        class_names=tuple(f"c{i}" for i in range(10)),
        default_layers={"cam": "relu2"}, input_size=32, resize_size=32,
    )


def tiny_vit_classifier(seed: int = 0) -> Classifier:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              num_classes=10, qkv_bias=True).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
    return Classifier(
        name="tiny-vit", module=model, family="vit",
        class_names=tuple(f"c{i}" for i in range(10)),
        default_layers={"tokens": "blocks.1.norm1"}, input_size=32, resize_size=32,
    )


@pytest.fixture
def cnn() -> Classifier:
    return tiny_cnn_classifier()


@pytest.fixture
def vit() -> Classifier:
    return tiny_vit_classifier()


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 3, 32, 32, generator=g)
