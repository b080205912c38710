"""Random-logit test: hand-checked class draw and similarity, the family on a model, and Quantus 0.6.0.

Agreement with Quantus (RandomLogit, similarity_func=correlation_spearman, abs=False,
normalise=False, a two-class tiny CNN so both pick the same other class, four 16×16 inputs,
gradient maps): Spearman within 1e-9 on every image.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from experiments.core.metrics import ImageContext, get_family
from experiments.core.metrics.random_logit import other_class, random_logit_record
from experiments.core.protocols import Preprocessing, copy_protocol, get_protocol

from .conftest import MEAN, STD, gradient_explainer, synthetic_sample, tiny_cnn


def test_other_class_is_uniform_over_the_rest_and_never_the_explained_one():
    draws = [other_class(2, 5, seed=0, index=i) for i in range(2000)]
    assert 2 not in draws
    counts = np.bincount(draws, minlength=5)
    assert counts[2] == 0 and all(abs(c - 500) < 80 for c in counts[[0, 1, 3, 4]])
    assert other_class(0, 2, seed=3, index=7) == 1 and other_class(1, 2, seed=3, index=7) == 0
    assert other_class(2, 5, seed=4, index=1) == other_class(2, 5, seed=4, index=1)   # reproducible
    with pytest.raises(ValueError, match="at least two classes"):
        other_class(0, 1, seed=0, index=0)


def test_similarity_hand_cases():
    protocol = get_protocol("random-logit-v1")
    m = np.arange(256, dtype=float).reshape(16, 16)
    same = random_logit_record(m, m, target=0, other=1, protocol=protocol)
    assert same.spearman == pytest.approx(1.0) and same.ssim == pytest.approx(1.0)
    flipped = random_logit_record(m, -m, target=0, other=1, protocol=protocol)
    assert flipped.spearman == pytest.approx(-1.0)
    flat = random_logit_record(m, np.zeros((16, 16)), target=0, other=1, protocol=protocol)
    assert flat.spearman is None            # a constant map has no ranks to correlate


def test_family_explains_another_class_and_the_map_changes(model):
    protocol = copy_protocol("random-logit-v1", "random-logit-small", preprocessing=Preprocessing("square", 32))
    family = get_family("random-logit")
    sample = synthetic_sample()
    ctx = ImageContext(model=model, mean=MEAN, std=STD, sample=sample, image=sample.load_image(),
                       explainer=gradient_explainer, num_classes=5, seed=0, index=0)
    [row] = family.run(protocol, ctx)
    data = row["data"]
    assert data["other"] != data["target"] and 0 <= data["other"] < 5
    x = ctx.inputs(protocol.preprocessing)[1]
    own, other = gradient_explainer(model, x.repeat(2, 1, 1, 1), [data["target"], data["other"]])
    # the context explains one class per call, this a batch of two: float32 rounding reorders a few near-ties
    assert data["spearman"] == pytest.approx(random_logit_record(own, other, target=0, other=1, protocol=protocol).spearman,
                                             abs=1e-4)
    assert data["spearman"] < 0.99          # the gradient of another logit is another map


def test_matches_quantus():
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn(num_classes=2)
    torch.manual_seed(2)
    x = torch.randn(4, 3, 16, 16)
    y = model(x).argmax(1)
    a = gradient_explainer(model, x, y.tolist())

    def explain_func(model, inputs, targets, **kwargs):
        return gradient_explainer(model, torch.as_tensor(inputs), np.asarray(targets).tolist())[:, None].numpy()

    protocol = get_protocol("random-logit-v1")
    for i in range(len(x)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = quantus.RandomLogit(num_classes=2, similarity_func=quantus.similarity_func.correlation_spearman,
                                         abs=False, normalise=False, disable_warnings=True)
            [q] = metric(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                         a_batch=a[i:i + 1, None].numpy(), explain_func=explain_func, device="cpu")
        other = 1 - int(y[i])
        assert other_class(int(y[i]), 2, seed=0, index=i) == other
        [b] = gradient_explainer(model, x[i:i + 1], [other])
        ours = random_logit_record(a[i], b, target=int(y[i]), other=other, protocol=protocol).spearman
        assert ours == pytest.approx(float(q), abs=1e-9)
