import pytest
import torch

from experiments.core.imageops import normalize
from experiments.core.metrics.perturbation import (
    PerturbationRecord,
    aggregate_perturbation,
    perturbation_record,
    removed_counts,
)
from experiments.core.protocols import copy_protocol, get_protocol

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PROTOCOL = get_protocol("chefer-perturbation-v1")


def test_removed_counts_floor_p_times_n():
    assert removed_counts(PROTOCOL.fractions, 10) == list(range(10))
    counts = removed_counts(PROTOCOL.fractions, 224 * 224)
    assert counts[3] == 15052 and counts[7] == 35123 and counts[9] == 45158


class Recorder(torch.nn.Module):
    """Classifies by brightness and keeps every batch it saw."""

    def __init__(self):
        super().__init__()
        self.batches = []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.batches.append(x.detach().clone())
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([mean, -mean, torch.zeros_like(mean)], dim=1)


def test_top_and_bottom_fractions_are_blacked_out_in_pixel_space():
    recorder = Recorder()
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 10, 10, generator=g) * 0.8 + 0.1
    sal = torch.randperm(100, generator=g).float().view(10, 10)  # distinct values 0..99
    rec = perturbation_record(recorder, pixels, sal, label=0, explained=0, mode="target", protocol=PROTOCOL,
                              mean=MEAN, std=STD, batch_size=4)
    seen = torch.cat(recorder.batches)
    assert seen.shape[0] == 19  # clean + 9 positive + 9 negative
    pix = seen * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    for k in range(1, 10):
        positive, negative = pix[k], pix[9 + k]
        removed_pos = (positive.abs() < 1e-6).all(0)
        removed_neg = (negative.abs() < 1e-6).all(0)
        assert removed_pos.sum() == 10 * k and removed_neg.sum() == 10 * k
        assert bool((sal[removed_pos] >= 100 - 10 * k).all())   # the k·10 highest
        assert bool((sal[removed_neg] < 10 * k).all())          # the k·10 lowest
        kept = ~removed_pos
        assert torch.allclose(positive[:, kept], pixels[:, kept], atol=1e-6)
    assert len(rec.positive) == len(rec.negative) == 10 and rec.positive[0] == rec.negative[0]
    assert PerturbationRecord.from_dict(rec.to_dict()) == rec


def test_predictions_follow_the_model(model):
    pixels, sal = torch.rand(3, 32, 32), torch.rand(32, 32)
    rec = perturbation_record(model, pixels, sal, label=1, explained=1, mode="predicted", protocol=PROTOCOL, mean=MEAN, std=STD)
    with torch.no_grad():
        clean = int(model(normalize(pixels, MEAN, STD)[None]).argmax())
    assert rec.positive[0] == clean


def make(mode, pos, neg, label=1):
    fr = PROTOCOL.fractions
    return PerturbationRecord(label, label, mode, tuple(fr), tuple(label if ok else 9 for ok in pos), tuple(label if ok else 9 for ok in neg))


def test_aggregate_hand_computed():
    T, F = True, False
    records = [
        make("predicted", [T, T, T, F, F, F, F, F, F, F], [T] * 10),
        make("predicted", [T, F, F, F, F, F, F, F, F, F], [T] * 9 + [F]),
        make("target", [T] * 10, [T] * 10),
    ]
    out = aggregate_perturbation(records, PROTOCOL)
    pred = out["predicted"]
    assert pred["positive_accuracy"] == [1.0, 0.5, 0.5, 0, 0, 0, 0, 0, 0, 0]
    # trapezoid over x = 0, 0.1, …, 0.9: 0.1·(Σy − y0/2 − y9/2) = 0.1·(2 − 0.5 − 0) → ×100 = 15
    assert pred["positive"] == pytest.approx(15.0)
    # negative: 1 everywhere except 0.5 at 0.9 → 0.1·(9.5 − 0.5 − 0.25) ×100 = 87.5
    assert pred["negative"] == pytest.approx(87.5)
    assert pred["overall"] == pytest.approx(72.5)
    assert out["target"]["positive"] == pytest.approx(90.0)  # the maximum for p = 0 … 0.9
    assert aggregate_perturbation([r.to_dict() for r in records], PROTOCOL) == out


def test_aggregate_refuses_mixed_protocols():
    other = copy_protocol(PROTOCOL, "five-steps", fractions=(0.0, 0.2, 0.4, 0.6, 0.8))
    with pytest.raises(ValueError, match="one protocol"):
        aggregate_perturbation([make("predicted", [True] * 10, [True] * 10)], other)
