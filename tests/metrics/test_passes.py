"""Model passes pooled across images (experiments.core.metrics.passes).

Several images run together give the records each gives alone, for every registered family and
protocol; the families with pass generators then make fewer, fuller model calls; one image's
failure stays that image's.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from experiments.core.metrics import ImageContext, default_batch_size, drive, family_keys, get_family, image_group_size
from experiments.core.protocols import get_protocol, protocol_names

from .conftest import MEAN, STD, gradient_explainer, synthetic_sample, tiny_cnn
from .test_contract import small

CASES = [(key, name) for key in family_keys() for name in protocol_names(key)]
POOLING = sorted({key for key, _ in CASES if get_family(key).pools_passes()})


class CountingModel(torch.nn.Module):
    """The tiny CNN, recording the batch size of every call."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_cnn()
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


def contexts(model, n, batch_size=None):
    out = []
    for seed in range(n):
        sample = synthetic_sample(seed=seed, label=seed % 5)
        out.append(ImageContext(model=model, mean=MEAN, std=STD, sample=sample, image=sample.load_image(),
                                explainer=gradient_explainer, num_classes=5, seed=3, index=seed,
                                batch_size=batch_size))
    return out


def assert_close(a, b, path="data"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6), path
    else:
        assert a == b, path


def test_the_families_with_pass_generators():
    assert POOLING == ["faithfulness-correlation", "infidelity", "insertion-deletion", "perturbation"]


@pytest.mark.parametrize("key,name", CASES)
def test_images_run_together_give_the_records_each_gives_alone(key, name):
    family, protocol = get_family(key), small(get_protocol(name))
    model = tiny_cnn()
    alone = [family.run(protocol, ctx) for ctx in contexts(model, 3)]
    together = family.run_many(protocol, contexts(model, 3))
    assert len(together) == 3
    for rows, pooled in zip(alone, together):
        assert not isinstance(pooled, BaseException), pooled
        assert [(r["class_id"], r["variant"]) for r in rows] == [(r["class_id"], r["variant"]) for r in pooled]
        for row, other in zip(rows, pooled):
            assert_close(row["data"], other["data"])
            np.testing.assert_allclose(np.asarray(row["saliency"]), np.asarray(other["saliency"]), rtol=1e-6)


@pytest.mark.parametrize("key", POOLING)
def test_pooled_images_make_fewer_fuller_calls(key):
    """Four images alone each make their own calls; together the same inputs go in fewer calls,
    none over the batch. (The maps and the top-1 come from the inner model, so the counted
    calls are the protocol's perturbed inputs only.)"""
    family = get_family(key)
    protocol = small(get_protocol(protocol_names(key)[0]))
    batch = 16

    def counted_calls(together: bool) -> list[int]:
        model = CountingModel()
        ctxs = contexts(model, 4, batch_size=batch)
        for ctx in ctxs:
            ctx._explainer = lambda m, x, t, inner=model.inner: gradient_explainer(inner, x, t)
            ctx.top1(protocol.preprocessing)
        model.calls.clear()
        if together:
            assert not any(isinstance(r, BaseException) for r in family.run_many(protocol, ctxs))
        else:
            for ctx in ctxs:
                family.run(protocol, ctx)
        return model.calls

    alone, pooled = counted_calls(False), counted_calls(True)
    assert sum(pooled) == sum(alone) > 0
    assert max(pooled) <= batch and len(pooled) < len(alone)


def test_a_failing_image_fails_alone():
    family, protocol = get_family("perturbation"), small(get_protocol("chefer-perturbation-v1"))
    ctxs = contexts(tiny_cnn(), 3)
    ctxs[1].sample = synthetic_sample(seed=1, label=9)      # a label outside the model's 5 classes
    results = family.run_many(protocol, ctxs)
    assert isinstance(results[1], ValueError) and "outside the model's 5 classes" in str(results[1])
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)


def test_a_model_with_the_wrong_output_fails_its_round_with_a_reason():
    def steps():
        yield torch.zeros(2, 3, 4, 4)
        return "unreachable"

    [result] = drive([steps()], lambda x: torch.zeros(x.shape[0]), batch_size=4)
    assert isinstance(result, ValueError) and "B×C logits" in str(result)


def test_generators_get_their_own_rows_across_chunks():
    """Three generators yield 3, 5 and 1 inputs (each filled with its id); chunks of at most 4 (as
    even as they go: 3 + 3 + 3) split them across calls, and each still receives exactly its own
    rows, in order, twice over."""
    def steps(ident, n):
        got = []
        for _ in range(2):
            logits = yield torch.full((n, 1, 1, 1), float(ident)) + torch.arange(n).view(-1, 1, 1, 1) / 10
            got.append(logits[:, 0].tolist())
        return got

    calls = []

    def model(x):
        calls.append(x.shape[0])
        return x.reshape(x.shape[0], 1)

    results = drive([steps(1, 3), steps(2, 5), steps(3, 1)], model, batch_size=4)
    assert calls == [3, 3, 3, 3, 3, 3]
    for ident, n, got in zip((1, 2, 3), (3, 5, 1), results):
        expected = [ident + i / 10 for i in range(n)]
        assert got == [pytest.approx(expected)] * 2


def test_the_batch_size_comes_from_the_device_or_the_setting(monkeypatch):
    monkeypatch.delenv("SALIENCY_EVAL_BATCH", raising=False)
    assert default_batch_size("cpu") == 16 and default_batch_size("cuda") == 64
    monkeypatch.setenv("SALIENCY_EVAL_BATCH", "40")
    assert default_batch_size("cpu") == 40
    assert ImageContext(model=tiny_cnn(), mean=MEAN, std=STD).batch_size == 40
    monkeypatch.setenv("SALIENCY_EVAL_BATCH", "0")
    with pytest.raises(ValueError, match="SALIENCY_EVAL_BATCH"):
        default_batch_size("cpu")


def test_images_go_together_until_the_lightest_pooling_protocol_fills_a_batch(monkeypatch):
    monkeypatch.delenv("SALIENCY_EVAL_BATCH", raising=False)
    infidelity, thesis, pointing = (get_protocol(n) for n in ("yeh-infidelity-v1", "thesis-v1", "torchray-pointing-v1"))
    assert get_family("infidelity").cost(infidelity).model_passes == 11
    assert image_group_size([infidelity], "cpu") == 2            # ceil(16 / 11)
    assert image_group_size([infidelity], "cuda") == 6           # ceil(64 / 11)
    assert image_group_size([infidelity], "cuda", most=4) == 4
    assert image_group_size([thesis, infidelity], "cpu") == 2    # the lightest pooling protocol decides
    assert image_group_size([thesis], "cpu") == 1                # 450 passes fill a batch alone
    assert image_group_size([pointing], "cpu") == 1              # no passes to pool
    assert image_group_size([], "cpu") == 1
    monkeypatch.setenv("SALIENCY_EVAL_BATCH", "44")
    assert image_group_size([infidelity], "cpu") == 4


def test_inputs_are_split_into_the_fewest_even_chunks():
    from experiments.core.metrics.passes import even_chunks

    assert even_chunks(22, 16) == [11, 11]
    assert even_chunks(34, 16) == [12, 11, 11]
    assert even_chunks(16, 16) == [16] and even_chunks(1, 16) == [1]
    assert even_chunks(9, 4) == [3, 3, 3]
    for total in range(1, 80):
        sizes = even_chunks(total, 16)
        assert sum(sizes) == total and max(sizes) <= 16 and max(sizes) - min(sizes) <= 1
        assert len(sizes) == -(-total // 16)
