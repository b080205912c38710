"""LRP on CNNs (zennit composites and our canonizers): the rule wiring on a tiny CNN against
explicit formulas, conservation on random ResNet18 / VGG16 / EfficientNet-Lite0 and on the real
EfficientNet-Lite0, and models left exactly as they were.

Conservation tested: with biases left out of the rules (the default), float64 and ε and the
denominator stabilisers at 1e-12,
``Σ R_input`` equals the explained logit to 1e-6 relative on every architecture, biases
included; in float32 with the default ε = 1e-6, to 1e-3 on the real EfficientNet-Lite0.
Textbook rules (biases absorb their share) conserve only when the biases are zero.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.torchvision import ResNetBasicBlockCanonizer

from explain.core.engine import explain
from explain.core.handle import Classifier
from explain.core.hooks import count_hooks
from explain.core.relevance import cnn, rules
from explain.core.relevance.cnn import (
    MergeBatchNormAtomic,
    ResNetBasicBlockSumCanonizer,
    StackedSum,
    TimmResidualCanonizer,
    cnn_relevance,
    make_composite,
)
from explain.core.zoo import random_classifier

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
LOW, HIGH = (0 - MEAN) / STD, (1 - MEAN) / STD


def logit_of_target(targets):
    return lambda out: nn.functional.one_hot(targets, out.shape[1]).to(out) * out


def random_images(n, size, seed=0):
    torch.manual_seed(seed)
    return (torch.rand(n, 3, size, size) - MEAN) / STD


def randomise_biases(model, zero=False):
    """Non-trivial batch-norm statistics and biases (or all biases and means zero)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                if zero:
                    m.running_mean.zero_(), m.bias.zero_()
                else:
                    m.running_mean.normal_(0, 0.2), m.bias.normal_(0, 0.2)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_() if zero else m.bias.normal_(0, 0.05)
    return model


# -- the rules zennit applies, against explicit formulas ------------------------------------
def test_tiny_cnn_matches_explicit_rules():
    """z^B at the first conv, z⁺ (w² fallback) at the second, Norm at the average pool, ε at the
    dense layer, ReLU passing relevance: composed by hand from explain.core.relevance.rules."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    ).eval()
    x = random_images(2, 8)
    targets = torch.tensor([0, 2])
    relevance, logits = cnn_relevance(net, x, logit_of_target(targets), low=LOW, high=HIGH, epsilon=1e-6)

    with torch.no_grad():
        a1 = torch.relu(net[0](x))
        a2 = torch.relu(net[2](a1))
        f = a2.mean(dim=(2, 3))
        w = net[6].weight[targets]                                  # B×5, bias left out
        r_out = logits[torch.arange(2), targets]
        r_f = f * w / (f * w).sum(1, keepdim=True) * r_out[:, None]
        r_a2 = a2 / a2.sum(dim=(2, 3), keepdim=True) * r_f[:, :, None, None]
        r_a1 = rules.conv2d_zplus_wsquare(a1, net[2].weight, r_a2, padding=1)
        expected = rules.conv2d_zbox(x, net[0].weight, r_a1, LOW, HIGH, padding=1)
    # zennit stabilises its denominators by 1e-6, the formulas above do not: ~1e-4 apart
    assert torch.allclose(relevance, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    assert torch.allclose(relevance.sum(dim=(1, 2, 3)), r_out, rtol=1e-3)


def test_lrp_method_map_is_the_positive_channel_sum_and_batches():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    ).eval()
    clf = Classifier(name="tiny-cnn", module=net, family="cnn", class_names=("a", "b", "c", "d"),
                     default_layers={"cam": "3"}, input_size=16, resize_size=16)
    x = random_images(3, 16)
    targets = torch.tensor([1, 3, 0])
    batch = explain(clf, x, "lrp", targets=targets)
    relevance, _ = cnn_relevance(net, x, logit_of_target(targets), low=LOW, high=HIGH)
    expected = relevance.sum(dim=1).clamp(min=0)
    for i in range(3):
        assert torch.allclose(batch[i].saliency, expected[i], atol=1e-6)
        [one] = explain(clf, x[i:i + 1], "lrp", targets=[int(targets[i])])
        assert torch.allclose(one.saliency, batch[i].saliency, atol=1e-6)
    assert (expected == 0).any() and (expected > 0).any()


# -- conservation on the site's architectures -------------------------------------------------
ARCHITECTURES = [("resnet18", 64), ("vgg16", 32), ("efficientnet_lite0", 64)]


@pytest.mark.parametrize("name, size", ARCHITECTURES)
def test_conservation_with_biases(name, size):
    """In float64 with ε and the stabilisers at 1e-12: exact up to rounding. (zennit's default
    stabiliser, 1e-6 absolute, takes 0.4 % of random VGG16's logit at 32 pixels, where the
    last feature map holds values ~1e-4.)"""
    clf = random_classifier(name, num_classes=10, seed=0)
    model = randomise_biases(clf.module).double()
    x = random_images(2, size).double()
    with torch.no_grad():
        reference = model(x)
    targets = reference.argmin(dim=1)           # any class: the rules do not care
    relevance, logits = cnn_relevance(
        model, x, logit_of_target(targets), low=LOW.double(), high=HIGH.double(), epsilon=1e-12, stabilizer=1e-12
    )
    assert torch.allclose(logits, reference, rtol=1e-9, atol=1e-9)
    explained = reference[torch.arange(2), targets]
    assert torch.allclose(relevance.sum(dim=(1, 2, 3)), explained, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name, size", ARCHITECTURES)
def test_textbook_rules_conserve_without_biases(name, size):
    clf = random_classifier(name, num_classes=10, seed=0)
    model = randomise_biases(clf.module, zero=True)
    x = random_images(2, size)
    targets = torch.tensor([1, 2])
    relevance, logits = cnn_relevance(
        model, x, logit_of_target(targets), low=LOW, high=HIGH, ignore_bias=False, epsilon=1e-9
    )
    explained = logits[torch.arange(2), targets]
    assert torch.allclose(relevance.sum(dim=(1, 2, 3)), explained, rtol=1e-3, atol=1e-5)


def test_textbook_rules_lose_relevance_to_folded_biases():
    """Why biases are left out by default: with them, a large part of the logit never reaches the pixels."""
    model = randomise_biases(random_classifier("efficientnet_lite0", num_classes=10).module)
    x = random_images(2, 64)
    targets = torch.tensor([1, 2])
    relevance, logits = cnn_relevance(model, x, logit_of_target(targets), low=LOW, high=HIGH, ignore_bias=False)
    explained = logits[torch.arange(2), targets]
    assert ((relevance.sum(dim=(1, 2, 3)) - explained).abs() > 0.05 * explained.abs()).all()


def test_real_efficientnet_lite0_conserves_the_logit():
    """The ImageNet EfficientNet-Lite0 on the cat photo: the whole logit reaches the pixels."""
    from PIL import Image
    from skimage import data

    from explain.core.imaging import preprocess
    from explain.core.zoo import load_classifier

    clf = load_classifier("efficientnet_lite0", device="cpu")
    x, _ = preprocess(Image.fromarray(data.chelsea()), clf)
    x = x[None]
    with torch.no_grad():
        target = clf.module(x).argmax(dim=1)
    relevance, logits = cnn_relevance(clf.module, x, logit_of_target(target), low=LOW, high=HIGH)
    explained = logits[0, target]
    assert torch.allclose(relevance.sum(), explained, rtol=1e-3)
    assert relevance.sum(dim=1).clamp(min=0).sum() > 0.5 * relevance.sum(dim=1).abs().sum()


def test_residual_canonizer_is_what_makes_efficientnet_conserve():
    model = randomise_biases(random_classifier("efficientnet_lite0", num_classes=10).module, zero=True)
    x = random_images(1, 64)
    targets = torch.tensor([3])
    composite = make_composite("epsilon_plus_box", LOW + 0 * x, HIGH + 0 * x)
    composite.canonizers = [c for c in composite.canonizers if not isinstance(c, TimmResidualCanonizer)]
    with Gradient(model=model, composite=composite) as attributor:
        logits, relevance = attributor(x.clone().requires_grad_(True), logit_of_target(targets))
    explained = logits[0, 3].detach()
    # the bare "+" hands both branches the full relevance: the total grows
    assert (relevance.sum() - explained).abs() > 0.05 * explained.abs()


def test_resnet_sum_canonizer_gives_zennits_relevance():
    """Our ResNet canonizers stack the skip addition on the first dimension; zennit's stack on the last."""
    model = randomise_biases(random_classifier("resnet18", num_classes=10).module).double()
    x = random_images(2, 64).double()
    targets = torch.tensor([3, 5])

    def relevance_with(resnet_canonizer):
        composite = make_composite("epsilon_plus_box", LOW.double() + 0 * x, HIGH.double() + 0 * x)
        composite.canonizers = [resnet_canonizer if isinstance(c, ResNetBasicBlockSumCanonizer) else c
                                for c in composite.canonizers]
        with Gradient(model=model, composite=composite) as attributor:
            return attributor(x.clone().requires_grad_(True), logit_of_target(targets))[1]

    ours = relevance_with(ResNetBasicBlockSumCanonizer())
    theirs = relevance_with(ResNetBasicBlockCanonizer())
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12 * float(theirs.abs().max()))
    assert not torch.equal(ours, relevance_with(TimmResidualCanonizer()))    # no ResNet canonizer: differs


def test_stacked_sum_keeps_the_layout_of_its_operands():
    a, b = (torch.randn(2, 5, 4, 3).contiguous(memory_format=torch.channels_last) for _ in range(2))
    total = StackedSum(dim=0)(torch.stack([a, b], dim=0))
    assert total.is_contiguous(memory_format=torch.channels_last) and not total.is_contiguous()
    assert torch.equal(total, a + b)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_every_rule_runs_channels_last_after_the_residual_sums(name, monkeypatch):
    """Channels-last images stay channels-last through the canonized residual blocks, so each
    convolution rule gets its input and relevance in that layout (not NCHW after the first sum)."""
    layouts = []

    def spy(x, weight, relevance, *args, **kwargs):
        layouts.append((x.is_contiguous(memory_format=torch.channels_last),
                        relevance.is_contiguous(memory_format=torch.channels_last)))
        return rules.conv2d_zplus_wsquare(x, weight, relevance, *args, **kwargs)

    monkeypatch.setattr(cnn, "conv2d_zplus_wsquare", spy)
    clf = random_classifier(name, num_classes=10, seed=0)
    x = random_images(2, 64).contiguous(memory_format=torch.channels_last)
    cnn_relevance(clf.module, x, logit_of_target(torch.tensor([1, 2])), low=LOW, high=HIGH)
    assert len(layouts) > 10 and all(x_cl and r_cl for x_cl, r_cl in layouts)


def test_batch_norm_merge_finds_timm_batchnormact_and_undoes_itself():
    model = randomise_biases(random_classifier("efficientnet_lite0", num_classes=10).module)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = random_images(1, 64)
    with torch.no_grad():
        before = model(x)
    assert SequentialMergeBatchNorm().apply(model) == []       # zennit's own misses BatchNormAct2d
    instances = MergeBatchNormAtomic().apply(model)
    assert len(instances) == len(norms) > 0
    with torch.no_grad():
        merged = model(x)
    assert torch.allclose(merged, before, rtol=1e-4, atol=1e-4)
    assert all("forward" in vars(m) and m.eps == 1e-5 for m in norms)   # the normalisation is skipped
    for instance in instances:
        instance.remove()
    assert not any("forward" in vars(m) for m in norms)
    assert all(m.eps == 1e-5 for m in norms)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_folded_norm_of_a_type_it_cannot_skip_computes_exactly_the_identity():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    (instance,) = MergeBatchNormAtomic().apply(model)
    norm = model[1]
    assert "forward" not in vars(norm) and 0 < norm.eps == MergeBatchNormAtomic.IDENTITY_EPS
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(5, 3, dtype=dtype)
        norm.to(dtype)
        assert torch.equal(norm(z), z)
    norm.float()
    instance.remove()
    assert norm.eps == 1e-5


@pytest.mark.parametrize("name, size", [("resnet18", 32), ("efficientnet_lite0", 32)])
def test_model_left_exactly_as_it_was(name, size):
    model = randomise_biases(random_classifier(name, num_classes=10).module)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    conv_biases = [m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d)]
    eps = [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    x = random_images(2, size)
    with torch.no_grad():
        before = model(x)
    cnn_relevance(model, x, logit_of_target(torch.tensor([0, 1])), low=LOW, high=HIGH)
    assert count_hooks(model) == 0
    assert not any("forward" in vars(m) or hasattr(m, "canonizer_sum") for m in model.modules())
    assert [m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d)] == conv_biases
    assert [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == eps
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())     # frozen by the zoo, still frozen
    with torch.no_grad():
        assert torch.equal(model(x), before)
