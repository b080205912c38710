"""The benchmark's pass plans and the plain passes its floors are measured with."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import benchmarks.bench as bench
from benchmarks.bench import (
    PASS_KINDS, PER_IMAGE, _attention_maps, markdown, pass_cap, pass_label, pass_plan, run_pass,
)
from explain.core.registry import get_method_class, methods_for
from tests.engine.conftest import tiny_cnn_classifier, tiny_vit_classifier


@pytest.fixture(scope="module")
def models():
    return {"cnn": tiny_cnn_classifier(), "vit": tiny_vit_classifier()}


def _batch(classifier, count=2):
    g = torch.Generator().manual_seed(3)
    return torch.randn(count, 3, classifier.input_size, classifier.input_size, generator=g)


@pytest.mark.parametrize("family", ["cnn", "vit"])
def test_every_method_of_a_family_has_a_plan_of_known_kinds(models, family):
    classifier = models[family]
    x = _batch(classifier)
    for key in methods_for(family):
        params = get_method_class(key).resolve_params(classifier)
        plan = pass_plan(key, classifier, params, x)
        assert plan, f"{key} on a {family} has no pass plan"
        for kind, size, count in plan:
            assert kind in PASS_KINDS, (key, kind)
            assert size >= classifier.input_size and count >= 0, (key, size, count)


def test_lrp_plans_differ_by_family_and_transformer_attribution_scales_with_start_block(models):
    vit, cnn = models["vit"], models["cnn"]
    x = _batch(vit)
    lrp = get_method_class("lrp")
    assert [k for k, _, _ in pass_plan("lrp", cnn, lrp.resolve_params(cnn), x)] == ["fwdbwd_input", "fwd"]
    assert [k for k, _, _ in pass_plan("lrp", vit, lrp.resolve_params(vit), x)] == [
        "fwdbwd_input", "fwd_attn", "bwd_input"]
    ta = get_method_class("transformer_attribution")
    depth = len(vit.module.blocks)
    plan = pass_plan("transformer_attribution", vit, ta.resolve_params(vit, {"start_block": 1}), x)
    counts = {kind: count for kind, _, count in plan}
    assert counts == {"fwdbwd_attn": 1, "fwd_attn": (depth - 1) / depth, "bwd_attn": 2 * (depth - 1) / depth}


def test_attention_maps_are_collected_attached_and_the_model_restored(models):
    module = models["vit"].module
    flags = [m.fused_attn for m in module.modules() if hasattr(m, "fused_attn")]
    pixels = _batch(models["vit"]).requires_grad_(True)
    with _attention_maps(module, keep=True) as maps:
        module(pixels)
    assert len(maps) == len(module.blocks)
    tokens = module.patch_embed.num_patches + 1
    for attn in maps:
        assert attn.shape == (2, module.blocks[0].attn.num_heads, tokens, tokens)
        assert attn.requires_grad
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))   # softmax rows
    assert [m.fused_attn for m in module.modules() if hasattr(m, "fused_attn")] == flags
    assert all(not b.attn.attn_drop._forward_hooks for b in module.blocks)
    with torch.no_grad():
        module(pixels)
    assert len(maps) == len(module.blocks)      # no hook left to append more


@pytest.mark.parametrize("kind", sorted(PASS_KINDS))
def test_every_pass_kind_runs_on_a_vit(models, kind):
    vit = models["vit"]
    seconds = run_pass(vit, "blocks.1.norm1", kind, _batch(vit), torch.tensor([1, 4]))
    assert math.isfinite(seconds) and seconds > 0


def test_cnn_pass_kinds_and_errors(models):
    cnn = models["cnn"]
    x, targets = _batch(cnn), torch.tensor([0, 3])
    for kind in ("fwd", "fwdbwd", "fwdbwd_input", "bwd_input"):
        assert run_pass(cnn, "relu2", kind, x, targets) > 0
    with pytest.raises(ValueError, match="needs a ViT"):
        run_pass(cnn, "relu2", "fwd_attn", x, targets)
    with pytest.raises(ValueError, match="unknown pass kind"):
        run_pass(cnn, "relu2", "fwd_twice", x, targets)


def test_caps_and_labels():
    for kind in PER_IMAGE:
        assert pass_cap(kind, 2, 4) == 4          # two passes per image are not a batch of eight
    assert pass_cap("fwd", 2.5, 4) == 10          # independent masked images: as many as there are
    assert pass_cap("fwd", 0.1, 4) == 1
    assert pass_label("fwdbwd_input", 224, 1) == "1×fwdbwd→input@224"
    assert pass_label("bwd_attn", 224, 2 * 11 / 12) == "1.83333×bwd→attn@224"
    result = {"when": "now", "device": "cpu", "threads": 1, "versions": {"torch": torch.__version__}, "rows": [
        {"model": "m", "weights": "random", "method": "lrp", "seconds_per_image": 2.0, "repeats": 5,
         "passes": [{"kind": "fwdbwd_input", "size": 224, "count": 1}, {"kind": "fwd", "size": 224, "count": 1}],
         "floor_seconds_per_image": 1.0, "ratio_to_floor": 2.0},
        {"model": "m", "weights": "random", "method": "x", "seconds_per_image": 0.0012345678},
        {"model": "m", "weights": "random", "method": "rise", "seconds_per_image": 3.0, "repeats": 2,
         "passes": [{"kind": "fwd", "size": 224, "count": 257}], "floor_folded": True,
         "floor_seconds_per_image": 2.0, "ratio_to_floor": 1.5},
    ]}
    text = markdown(result)
    assert "| m | random | lrp | 2 | 5 | 1×fwdbwd→input@224 + 1×fwd@224 | 1 | 2.00 |" in text
    assert "| m | random | x | 0.001235 |  | n/a |" in text      # four significant digits: GPU rows read
    assert "| m | random | rise | 3 | 2 | 257×fwd@224, norms folded | 2 | 1.50 |" in text
    assert "huge pages" not in text                    # tables written before the setting existed
    assert "CPU tensors on huge pages: yes" in markdown({**result, "huge_pages": True})


def test_the_floor_runs_every_pass_of_the_plan_in_batches_of_the_best_size(monkeypatch):
    runs = []

    def scripted_pass(classifier, layer, kind, xb, targets):
        runs.append((kind, int(xb.shape[-1]), len(xb)))
        return {"fwd": 0.01, "fwdbwd": 0.03, "bwd_attn": 0.05}[kind] * len(xb)   # linear in the batch

    monkeypatch.setattr(bench, "run_pass", scripted_pass)
    x = torch.randn(3, 3, 8, 8)
    unit = bench.UnitCosts(classifier=None, layer=None, x=x, batch_sizes=[4], repeats=1)
    # best batch sizes as picked by the short timings: 4 forward passes at a time, and one
    # image per gradient pass at the larger size (the pixel budget)
    unit.cache = {("fwd", 8, 100): (0.01, 4), ("fwdbwd", 12, 3): (0.03, 1), ("bwd_attn", 8, 3): (0.05, 1)}
    plan = [("fwd", 8, 5.5), ("fwdbwd", 12, 1), ("bwd_attn", 8, 11 / 12)]
    seconds = unit.plan_seconds(plan, [100, 3, 3], images=3)
    # 16.5 forward passes: four batches of 4 and half of a batch of 1; three gradient passes of
    # one image at 12×12; 2.75 backward passes: two whole, three quarters of a third
    assert runs == [("fwd", 8, 4)] * 4 + [("fwd", 8, 1)] + [("fwdbwd", 12, 1)] * 3 + [("bwd_attn", 8, 1)] * 3
    assert seconds == pytest.approx(16.5 * 0.01 + 3 * 0.03 + 2.75 * 0.05)


def test_batch_sizes_are_judged_by_samples_of_equal_time(monkeypatch):
    runs = []
    per_image = {1: 0.0625, 2: 0.03125, 4: 0.046875}           # batch 2 is the best per image (exact in binary)

    def scripted_pass(classifier, layer, kind, xb, targets):
        runs.append(len(xb))
        return per_image[len(xb)] * len(xb)

    monkeypatch.setattr(bench, "run_pass", scripted_pass)
    unit = bench.UnitCosts(classifier=None, layer=None, x=torch.randn(2, 3, 8, 8), batch_sizes=[1, 2, 4],
                           repeats=2)
    assert unit.cost("fwd", 8, cap=4) == pytest.approx(0.03125)
    assert unit.batch("fwd", 8, cap=4) == 2
    # per batch size: a warm-up pass, then two samples of passes until 0.5 s is spent: 0.0625 s
    # per pass for batches of 1 and 2 (8 passes), 0.1875 s for 4 (3 passes)
    assert bench.SAMPLE_SECONDS == 0.5
    calls = {1: 8, 2: 8, 4: 3}
    assert runs == [b for b in (1, 2, 4) for _ in range(1 + 2 * calls[b])]
    # a larger input keeps the pixel budget: a batch of 4 at 8×8 becomes 1 at 16×16
    runs.clear()
    unit.cost("fwd", 16, cap=4)
    assert set(runs) == {1}


def test_fastest_of_repeats_fast_runs_until_the_time_is_spent(monkeypatch):
    # the clock is scripted (a loaded machine cannot make the count flaky); runs still happen
    durations = iter([0.05, 0.02, 0.04] + [0.03] * 50)
    monkeypatch.setattr(bench, "_timed", lambda fn: (fn(), next(durations))[1])
    calls, refreshes = [], []
    best, count = bench.fastest_of(lambda: calls.append(1), lambda: refreshes.append(1),
                                   repeats=2, min_seconds=0.195, max_repeats=30)
    # 0.05 + 0.02 + 0.04 + 0.03·k ≥ 0.195 from k = 3 on: six runs, each followed by a refresh
    assert count == len(calls) == len(refreshes) == 6
    assert best == 0.02
    # slow runs stop at the minimum count; the cap bounds fast ones
    assert bench.fastest_of(lambda: None, lambda: None, repeats=2, min_seconds=0.0)[1] == 2
    assert bench.fastest_of(lambda: None, lambda: None, repeats=1, min_seconds=10.0, max_repeats=7)[1] == 7


def test_floors_fold_the_norms_where_the_method_runs_folded(models):
    cnn = models["cnn"]
    foldable = dataclasses.replace(cnn, fold_batch_norms=True)
    # the engine folds for the multi-pass methods, LRP's canonizer for its own pass
    assert bench.runs_folded(get_method_class("scorecam"), foldable)
    assert bench.runs_folded(get_method_class("lrp"), foldable)
    assert not bench.runs_folded(get_method_class("gradcam"), foldable)
    # never where the model may not be folded (uploaded models)
    assert not bench.runs_folded(get_method_class("lrp"), dataclasses.replace(cnn, fold_batch_norms=False))


def test_lrp_convolution_work_counts_the_signed_inputs_twice_by_hand(models):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),              # first layer (z^B): counted once, signed or not
        torch.nn.Conv2d(4, 6, 1),                         # signed input (no activation before it)
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 2, 3, padding=1, groups=2),    # non-negative input
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 10),
    ).eval()
    classifier = dataclasses.replace(models["cnn"], module=net, input_size=8)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    first, signed, unsigned = 64 * 4 * 3 * 9, 64 * 6 * 4, 64 * 2 * 3 * 9
    total = first + signed + unsigned
    assert bench.lrp_convolution_work(classifier, x) == pytest.approx((3 * total + 2 * signed) / (3 * total))
    assert bench.lrp_convolution_work(models["vit"], _batch(models["vit"])) is None
    row = {"model": "m", "weights": "random", "method": "lrp", "seconds_per_image": 1.0, "rule_convolution_work_over_floor": 1.5}
    text = markdown({"when": "now", "device": "cpu", "threads": 2, "versions": {}, "rows": [row]})
    assert "need 1.50× (m) the multiply-adds" in text
