"""Batch norms folded into convolutions: the same function, the model untouched, only where declared."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from explain.core.engine import explain
from explain.core.folding import conv_norm_pairs, folded_batch_norms, folded_parameters
from explain.core.hooks import count_hooks
from explain.core.registry import get_method_class, methods_for
from explain.core.zoo import get_spec, random_classifier
from tests.engine.conftest import tiny_cnn_classifier
from tests.engine.test_lrp_cnn import randomise_biases


def test_folded_parameters_equal_the_convolution_then_the_norm_written_out():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True).double()
    norm = nn.BatchNorm2d(4, eps=1e-3).double().eval()
    with torch.no_grad():
        norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2), norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    weight, bias = folded_parameters(conv, norm)
    z = nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    by_hand = (z - norm.running_mean.view(1, -1, 1, 1)) / torch.sqrt(norm.running_var.view(1, -1, 1, 1) + 1e-3)
    by_hand = by_hand * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    assert torch.allclose(nn.functional.conv2d(x, weight, bias, padding=1), by_hand, rtol=1e-12, atol=1e-12)
    conv.bias = None                                   # no bias: b = 0 before the norm
    weight, bias = folded_parameters(conv, norm)
    assert torch.allclose(bias, -norm.running_mean * norm.weight / torch.sqrt(norm.running_var + 1e-3) + norm.bias)


@pytest.mark.parametrize("name, pairs", [("efficientnet_lite0", 49), ("resnet18", 20), ("vgg19", 0)])
def test_built_in_cnns_fold_to_the_same_function_and_are_left_as_they_were(name, pairs):
    model = randomise_biases(random_classifier(name, num_classes=10).module)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert len(conv_norm_pairs(model)) == pairs
    assert get_spec(name).fold_batch_norms == (pairs > 0)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        before = model(x)
        with folded_batch_norms(model) as folded:
            after = model(x)
    handle.remove()
    assert folded == pairs and len(seen) == 2          # hooks on a folded convolution still fire
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))
    assert not any("forward" in vars(m) for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert count_hooks(model) == 0


def test_only_eval_batch_norms_after_plain_convolutions_are_folded():
    class PaddedConv(nn.Conv2d):                       # its own forward: folding would bypass it
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),          # folded
        PaddedConv(4, 4, 3), nn.BatchNorm2d(4),         # a subclass: left alone
        nn.Conv2d(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4),   # not adjacent
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4),          # training mode: batch statistics
    ).eval()
    model[8].train()
    assert conv_norm_pairs(model) == [(model[0], model[1])]
    with folded_batch_norms(model) as folded, torch.no_grad():
        assert folded == 1 and model[1](torch.ones(1, 4, 2, 2)).eq(1).all()


@pytest.mark.parametrize("key", [k for k in methods_for("cnn") if get_method_class(k).folds_batch_norms])
def test_methods_that_fold_give_the_unfolded_maps(key):
    plain = tiny_cnn_classifier()
    folding = dataclasses.replace(plain, fold_batch_norms=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    params = {"masks": 64} if key == "rise" else {}
    expected = explain(plain, x, key, params=params)
    state = {k: v.clone() for k, v in folding.module.state_dict().items()}
    got = explain(folding, x, key, params=params)
    assert [e.manifest["folded_batch_norms"] for e in expected] == [0, 0]
    assert [e.manifest["folded_batch_norms"] for e in got] == [1, 1]          # conv1 → bn1
    for e, g in zip(expected, got):
        assert e.target == g.target
        assert np.corrcoef(e.saliency.flatten(), g.saliency.flatten())[0, 1] > 0.999
    assert all(torch.equal(state[k], v) for k, v in folding.module.state_dict().items())
    assert not any("forward" in vars(m) for m in folding.module.modules())


def test_single_pass_methods_do_not_fold():
    folding = dataclasses.replace(tiny_cnn_classifier(), fold_batch_norms=True)
    [e] = explain(folding, torch.randn(1, 3, 32, 32), "gradcam")
    assert e.manifest["folded_batch_norms"] == 0
