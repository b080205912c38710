import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from experiments.core.imageops import gaussian_blur, normalize
from experiments.core.metrics.causal import (
    CausalRecord,
    aggregate_causal,
    auc,
    causal_curves,
    causal_record,
    group_labels,
    pixel_order,
    probability_group,
)
from experiments.core.protocols import copy_protocol, get_protocol

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_auc_hand_computed():
    assert auc([1, 0]) == pytest.approx(0.5)
    assert auc([0, 1, 1]) == pytest.approx((2 - 0 - 0.5) / 2)
    assert auc([0.2, 0.4, 0.9, 0.1]) == pytest.approx((1.6 - 0.1 - 0.05) / 3)
    assert auc([0.3] * 7) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        auc([1.0])


def test_pixel_order_is_highest_first_and_stable_for_ties():
    sal = torch.tensor([[0.5, 0.9, 0.5], [0.1, 0.9, 0.5]])
    assert pixel_order(sal).tolist() == [1, 4, 0, 2, 5, 3]


def test_blur_matches_torchvision():
    x = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))
    for k, s in ((51, 50.0), (11, 5.0)):
        ours = gaussian_blur(x, k, s)
        theirs = TF.gaussian_blur(x, [k, k], [s, s])
        assert torch.allclose(ours, theirs, atol=1e-5)


def reference_curves(model, pixels, sal, target, protocol):
    """Deliberately simple: one image per step, built pixel by pixel from the sorted order."""
    h, w = sal.shape
    order = sorted(range(h * w), key=lambda j: (-float(sal.reshape(-1)[j]), j))
    x = normalize(pixels, MEAN, STD)

    def substrate(sub):
        if sub.kind == "zeros":
            return torch.zeros_like(x)
        return normalize(TF.gaussian_blur(pixels, [sub.kernel] * 2, [sub.sigma] * 2), MEAN, STD)

    curves = []
    for start, finish in ((substrate(protocol.insertion_substrate), x), (x, substrate(protocol.deletion_substrate))):
        ys = []
        for step in range(math.ceil(h * w / protocol.step) + 1):
            current = start.clone().reshape(3, -1)
            chosen = torch.tensor(order[: min(step * protocol.step, h * w)], dtype=torch.long)
            current[:, chosen] = finish.reshape(3, -1)[:, chosen]
            current = current.reshape(3, h, w)
            with torch.no_grad():
                ys.append(float(torch.softmax(model(current[None]), 1)[0, target]))
        curves.append(np.array(ys))
    return curves


@pytest.mark.parametrize("name", ["thesis-v1", "rise-v1", "groupcam-v1"])
def test_batched_curves_equal_a_step_by_step_reference(model, name):
    # 64×64 keeps the reference loop fast; 200 px per step gives a partial last step.
    protocol = copy_protocol(name, "small", step=200)
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(3, 64, 64, generator=g)
    sal = torch.rand(64, 64, generator=g).round(decimals=1)  # many ties
    ins, dele, logits = causal_curves(model, pixels, sal, 2, protocol=protocol, mean=MEAN, std=STD, batch_size=7)
    ref_ins, ref_del = reference_curves(model, pixels, sal, 2, protocol)
    assert len(ins) == math.ceil(64 * 64 / 200) + 1 == 22
    np.testing.assert_allclose(ins, ref_ins, atol=1e-5)
    np.testing.assert_allclose(dele, ref_del, atol=1e-5)
    with torch.no_grad():
        clean = torch.softmax(model(normalize(pixels, MEAN, STD)[None]), 1)[0]
    assert dele[0] == pytest.approx(float(clean[2]), abs=1e-6) and ins[-1] == pytest.approx(float(clean[2]), abs=1e-6)
    assert logits.argmax() == int(clean.argmax())


def test_zero_substrate_is_zero_in_normalised_space_not_black(model):
    protocol = copy_protocol("rise-v1", "small-rise", step=1000)
    pixels = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))
    _, dele, _ = causal_curves(model, pixels, torch.rand(32, 32), 1, protocol=protocol, mean=MEAN, std=STD)
    with torch.no_grad():
        zeros = float(torch.softmax(model(torch.zeros(1, 3, 32, 32)), 1)[0, 1])
        black = float(torch.softmax(model(normalize(torch.zeros(1, 3, 32, 32), MEAN, STD)), 1)[0, 1])
    assert dele[-1] == pytest.approx(zeros, abs=1e-6)
    assert abs(zeros - black) > 1e-4  # the test would not tell them apart otherwise


class CountingModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_all_steps_go_through_the_model_in_few_batches(model):
    counting = CountingModel(model)
    protocol = copy_protocol("thesis-v1", "t", step=100)  # 64×64 → 41 steps, 42 points per curve
    causal_curves(counting, torch.rand(3, 64, 64), torch.rand(64, 64), 0, protocol=protocol, mean=MEAN, std=STD, batch_size=16)
    assert counting.calls == 2 * math.ceil(42 / 16)


def test_batch_size_does_not_change_the_result(model):
    protocol = copy_protocol("thesis-v1", "t", step=300)
    args = (model, torch.rand(3, 64, 64), torch.rand(64, 64), 3)
    a = causal_curves(*args, protocol=protocol, mean=MEAN, std=STD, batch_size=1)
    b = causal_curves(*args, protocol=protocol, mean=MEAN, std=STD, batch_size=100)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_record_scores_are_auc_times_100(model):
    protocol = copy_protocol("rise-v1", "r", step=512)
    rec = causal_record(model, torch.rand(3, 32, 32), torch.rand(32, 32), 4, protocol=protocol, mean=MEAN, std=STD)
    assert rec.insertion_auc == pytest.approx(100 * auc(rec.insertion))
    assert rec.deletion_auc == pytest.approx(100 * auc(rec.deletion))
    assert rec.overall == pytest.approx(rec.insertion_auc - rec.deletion_auc)
    assert CausalRecord.from_dict(rec.to_dict()) == rec


def test_bad_inputs_raise_clear_errors(model):
    protocol = get_protocol("thesis-v1")
    with pytest.raises(ValueError, match="resize the map"):
        causal_curves(model, torch.rand(3, 64, 64), torch.rand(32, 32), 0, protocol=protocol, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="NaN"):
        causal_curves(model, torch.rand(3, 64, 64), torch.full((64, 64), float("nan")), 0, protocol=protocol, mean=MEAN, std=STD)
    with pytest.raises(TypeError):
        causal_curves(model, torch.rand(3, 64, 64), torch.rand(64, 64), 0, protocol=get_protocol("adebayo-v1"), mean=MEAN, std=STD)


def test_probability_group_boundaries():
    edges = get_protocol("thesis-v1").group_edges
    assert probability_group(0.0, edges) == 0
    assert probability_group(0.0999, edges) == 0
    assert probability_group(0.1, edges) == 1
    assert probability_group(0.55, edges) == 5
    assert probability_group(0.9, edges) == 9
    assert probability_group(0.99989, edges) == 9
    assert probability_group(0.9999, edges) == 10
    assert probability_group(1.0, edges) == 10
    labels = group_labels(edges)
    assert len(labels) == 11 and labels[0] == "[0%, 10%)" and labels[9] == "[90%, 99.99%)" and labels[10] == "[99.99%, 100%]"


def rec(p, ins, dele):
    return CausalRecord(0, 0, p, ins, dele, (0.0, 1.0), (1.0, 0.0))


def test_aggregate_averages_per_image_and_by_group():
    records = [rec(0.05, 40, 10), rec(0.95, 60, 20), rec(0.99995, 80, 5), rec(0.97, 20, 30)]
    out = aggregate_causal(records, get_protocol("thesis-v1"))
    assert out["n"] == 4
    assert out["insertion"] == pytest.approx(50) and out["deletion"] == pytest.approx(16.25)
    assert out["overall"] == pytest.approx(33.75)
    groups = out["groups"]
    assert [g["n"] for g in groups] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1]
    assert groups[9]["insertion"] == pytest.approx(40) and groups[9]["overall"] == pytest.approx(40 - 25)
    assert groups[10]["deletion"] == pytest.approx(5)
    assert groups[1]["insertion"] is None
    assert out["insertion_curve"] == [0.0, 1.0]
    # records stored as dicts aggregate the same
    assert aggregate_causal([r.to_dict() for r in records], get_protocol("thesis-v1")) == out


def test_target_outside_the_classes_is_a_clear_error(model):
    with pytest.raises(ValueError, match="outside the model's 5 classes"):
        causal_curves(model, torch.rand(3, 64, 64), torch.rand(64, 64), 7, protocol=get_protocol("thesis-v1"), mean=MEAN, std=STD)
