"""The run services end to end in this process (the command line's path), checked against the
metric functions called directly and against hand-computed baselines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from django.conf import settings

from experiments import selectors, services
from experiments.core.datasets import sample_dataset
from experiments.core.metrics import aggregate_pointing, aggregate_segmentation, pointing_pairs
from experiments.core.protocols import get_protocol
from experiments.models import Experiment, Record

from .conftest import LOCALISATION

pytestmark = pytest.mark.django_db


def _dataset(n=3):
    return sample_dataset("localisation", cache_dir=settings.DATA_DIR / "samples", seed=0, num_images=12).subset(first=n)


def test_centre_baseline_pointing_and_segmentation_match_a_direct_computation(alice, lite0):
    run = services.experiment_create(
        owner=alice, name="centre", model=lite0, dataset=LOCALISATION,
        methods=["baseline_centre"], protocols=["torchray-pointing-v1", "chefer-segmentation-v1"],
        shard_size=2, submit=False)
    assert run.status == Experiment.Status.SCHEDULED and run.units_total == 3
    assert run.estimated_seconds > 0
    run = services.experiment_run_sync(experiment=run)
    assert run.status == Experiment.Status.DONE, run.error

    # Independently: the first maximum of the centre map, resized to the image, lies at the
    # image centre (±1 px); a hit when some ground-truth pixel is strictly within 15 px of it,
    # by brute force over the mask's pixels instead of a distance transform.
    protocol = get_protocol("torchray-pointing-v1")
    base = torch.from_numpy(services.baseline_map("baseline_centre", 224, 224, seed=0))
    hits = {}
    for sample in _dataset():
        for class_id, mask, _ in pointing_pairs(sample, protocol):
            h, w = mask.shape
            big = F.interpolate(base[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
            py, px = np.unravel_index(np.argmax(big), big.shape)
            assert abs(py - (h - 1) / 2) <= 1 and abs(px - (w - 1) / 2) <= 1
            yy, xx = np.nonzero(mask)
            hit = np.min((yy - py) ** 2 + (xx - px) ** 2) < 15 ** 2
            hits.setdefault(class_id, []).append(1.0 if hit else 0.0)
    expected = np.mean([100 * np.mean(v) for v in hits.values()])
    [pointing, segmentation] = run.results["protocols"]
    assert pointing["rows"][0]["values"]["all"] == pytest.approx(expected)
    assert pointing["rows"][0]["n"] == sum(len(v) for v in hits.values())

    # Segmentation pooled over the three images from the stored records equals a recomputation.
    records = Record.objects.filter(experiment=run, protocol="chefer-segmentation-v1")
    assert records.count() == 3 and all(r.ok for r in records)
    again = aggregate_segmentation([r.data for r in records])
    assert segmentation["rows"][0]["values"]["miou"] == pytest.approx(again["miou"])
    assert run.manifest["versions"]["torch"]
    backup = selectors.experiment_text_backup(experiment=run)
    assert "torchray-pointing-v1" in backup and "tolerance" in backup and lite0.weights_sha256 in backup


def test_gradcam_records_are_unique_and_a_rerun_adds_nothing(alice, lite0):
    run = services.experiment_create(
        owner=alice, name="gradcam", model=lite0, dataset=LOCALISATION,
        methods=[{"key": "gradcam"}, {"key": "baseline_random"}], protocols=["torchray-pointing-v1"],
        shard_size=3, submit=False)
    run = services.experiment_run_sync(experiment=run)
    assert run.status == Experiment.Status.DONE, run.error
    before = list(Record.objects.filter(experiment=run).order_by("pk").values_list(
        "image_index", "method_slot", "protocol", "class_id", "data"))
    pairs = sum(len(list(pointing_pairs(s, get_protocol("torchray-pointing-v1")))) for s in _dataset())
    assert len(before) == 2 * pairs
    # A shard delivered again after it finished, and one forced to run again, write nothing new.
    shard = run.shards.get()
    services.shard_run(shard=shard)
    type(shard).objects.filter(pk=shard.pk).update(status="running")
    Experiment.objects.filter(pk=run.pk).update(status="running")
    services.shard_run(shard=shard)
    after = list(Record.objects.filter(experiment=run).order_by("pk").values_list(
        "image_index", "method_slot", "protocol", "class_id", "data"))
    assert after == before
    # The pointing score recomputed from the records with the core aggregator.
    grad = [d for (_, slot, _, _, d) in before if slot == 0]
    assert run.results["protocols"][0]["rows"][0]["values"]["all"] == pytest.approx(aggregate_pointing(grad)["all"]["score"])


def test_a_broken_image_is_a_failed_record_and_the_run_goes_on(alice, lite0, tmp_path, settings):
    from PIL import Image

    root = tmp_path / "ilsvrc"
    folder = root / "val" / "n01440764"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 48), (10, 200, 30)).save(folder / "ILSVRC2012_val_00000001.JPEG")
    (folder / "ILSVRC2012_val_00000002.JPEG").write_bytes(b"not a jpeg at all")
    # A synset list of 1000 classes (the model's), so labels mean the model's classes.
    others = [f"n{90000000 + i:08d} class {i}" for i in range(1, 1000)]
    (root / "synsets.txt").write_text("\n".join(["n01440764 tench, Tinca tinca", *others]) + "\n")
    settings.DATA_ROOTS = [root]
    run = services.experiment_create(
        owner=alice, name="broken", model=lite0,
        dataset={"kind": "ilsvrc2012-val", "paths": {"images": str(root / "val"), "synsets": str(root / "synsets.txt")}},
        methods=["gradcam"], protocols=["chefer-perturbation-v1"], submit=False)
    assert run.num_images == 2
    run = services.experiment_run_sync(experiment=run)
    assert run.status == Experiment.Status.DONE
    bad = Record.objects.get(experiment=run, ok=False)
    assert bad.image_index == 1 and bad.error
    assert Record.objects.filter(experiment=run, ok=True).count() == 2   # predicted and target modes
    assert run.results["protocols"][0]["rows"][0]["failed"] == 1


@pytest.mark.parametrize("dataset, protocols, message", [
    ({"kind": "sample-classification"}, ["torchray-pointing-v1"], "boxes or masks"),
    ({"kind": "voc2007", "paths": {"root": "/etc"}}, ["thesis-v1"], "outside the configured data roots"),
    ({"kind": "sample-localisation"}, ["no-such-protocol"], "unknown protocol"),
])
def test_requests_that_cannot_run_are_refused_with_a_reason(alice, lite0, dataset, protocols, message):
    with pytest.raises(ValueError, match=message):
        services.experiment_create(owner=alice, name="x", model=lite0, dataset=dataset, methods=["gradcam"],
                                   protocols=protocols, submit=False)
    assert not Experiment.objects.exists()


def test_sanity_check_of_a_model_independent_map_stays_identical_at_every_layer(alice, lite0):
    # The random baseline ignores the model: every randomisation step gives the same map, so
    # Spearman and SSIM are exactly 1 (the case the sanity checks exist to catch).
    run = services.experiment_create(
        owner=alice, name="sanity", model=lite0, dataset={"kind": "sample-classification", "subset": {"mode": "first", "n": 1}},
        methods=["baseline_random"], protocols=[{"copy_of": "adebayo-v1", "name": "cascading-only", "params": {"modes": ["cascading"]}}],
        submit=False)
    run = services.experiment_run_sync(experiment=run)
    assert run.status == Experiment.Status.DONE, run.error
    record = Record.objects.get(experiment=run)
    steps = record.data["steps"]
    assert len(steps) > 10 and {s["mode"] for s in steps} == {"cascading"}
    assert all(s["spearman"] == pytest.approx(1.0) and s["ssim"] == pytest.approx(1.0) for s in steps)
    row = run.results["protocols"][0]["rows"][0]
    assert row["values"]["cascading.spearman_abs"] == pytest.approx(1.0)
    assert [s["step"] for s in row["extras"]["steps"]["cascading"]] == list(range(len(steps)))


def test_estimates_use_measured_costs_once_a_method_has_run(alice, lite0):
    submit = dict(owner=alice, model=lite0, dataset=LOCALISATION, methods=["gradcam"],
                  protocols=["chefer-segmentation-v1"], submit=False)
    first = services.experiment_create(name="first", **submit)
    assert first.estimate_basis["0|chefer-segmentation-v1"]["source"].startswith("prior")
    first = services.experiment_run_sync(experiment=first)
    seconds = Record.objects.filter(experiment=first).values_list("seconds", flat=True)
    second = services.experiment_create(name="second", **submit)
    basis = second.estimate_basis["0|chefer-segmentation-v1"]
    assert basis["source"] == "measured on 3 images"
    assert basis["seconds_per_image"] == pytest.approx(sum(seconds) / 3)
    assert second.estimated_seconds == pytest.approx(3 * basis["seconds_per_image"])
    progress = selectors.experiment_progress(experiment=first)
    assert progress["fraction"] == 1.0 and progress["eta_seconds"] is None and first.actual_seconds > 0


def test_the_command_line_runs_the_same_services(alice, lite0, capsys):
    from django.core.management import call_command

    call_command("run_experiment", "--model", "efficientnet_lite0", "--dataset", "sample-localisation", "--first", "2",
                 "--methods", "baseline_centre", "baseline_random", "--protocols", "torchray-pointing-v1",
                 "--user", "alice")
    out = capsys.readouterr().out
    run = Experiment.objects.get(owner=alice)
    assert run.status == Experiment.Status.DONE and run.num_images == 2
    assert "torchray-pointing-v1" in out and "Centre map (baseline)" in out and "Random map (baseline)" in out


def test_the_command_line_shows_progress_unless_quiet(alice, lite0, capsys):
    from django.core.management import call_command

    args = ["run_experiment", "--model", "efficientnet_lite0", "--dataset", "sample-localisation", "--first", "2",
            "--methods", "baseline_centre", "baseline_random", "--protocols", "complexity-v1", "--user", "alice"]
    call_command(*args)
    err = capsys.readouterr().err
    assert "4/4" in err and "100%" in err          # 2 images × 2 methods, tqdm's counter
    call_command(*args, "--quiet")
    assert "4/4" not in capsys.readouterr().err
    run = Experiment.objects.filter(owner=alice).order_by("-pk").first()
    ranking = run.results["rankings"]
    assert ranking["metrics"] == ["complexity-v1:gini", "complexity-v1:entropy"]
    assert sorted(r["method"] for r in ranking["aggregate"]) == ["Centre map (baseline)", "Random map (baseline)"]
    # the centre map is a smooth blob: sparser (higher Gini) and simpler (lower entropy) than noise
    assert ranking["ranks"]["complexity-v1:gini"]["Centre map (baseline)"] == 1
    assert ranking["ranks"]["complexity-v1:entropy"]["Centre map (baseline)"] == 1


def test_a_shards_images_evaluated_together_give_the_records_of_one_at_a_time(alice, lite0, monkeypatch):
    """Infidelity's 11 passes per image fill a 16-image CPU batch with two images at a time
    (Evaluator.image_group_size); the records equal a run that takes one image at a time."""
    from experiments.services import evaluation
    from explain import services as explain_services

    monkeypatch.delenv("SALIENCY_EVAL_BATCH", raising=False)

    def records(name):
        run = services.experiment_create(
            owner=alice, name=name, model=lite0, dataset=LOCALISATION,
            methods=["gradcam", "baseline_random"], protocols=["yeh-infidelity-v1"], shard_size=3, submit=False)
        run = services.experiment_run_sync(experiment=run)
        assert run.status == Experiment.Status.DONE, run.error
        return list(Record.objects.filter(experiment=run).order_by("image_index", "method_slot")
                    .values_list("image_index", "method_slot", "ok", "data"))

    run = services.experiment_create(owner=alice, name="probe", model=lite0, dataset=LOCALISATION,
                                     methods=["gradcam"], protocols=["yeh-infidelity-v1"], submit=False)
    evaluator = evaluation.Evaluator(classifier=explain_services.classifier_load(model=lite0), experiment=run)
    assert evaluator.image_group_size() == 2
    together = records("together")
    monkeypatch.setattr(evaluation, "MAX_IMAGE_GROUP", 1)
    assert evaluator.image_group_size() == 1
    alone = records("alone")
    assert len(together) == len(alone) == 6 and all(ok for _, _, ok, _ in together)
    for (i, slot, _, data), (j, other_slot, _, other) in zip(together, alone):
        assert (i, slot) == (j, other_slot)
        # A batch's make-up changes float32 logits in the last digits (oneDNN picks its kernels by
        # batch size); infidelity's drops are differences of near-equal logits, so that noise grows
        # to ~1e-4 relative, and the fitted scale beta (~2e-4) moves by ~3e-8.
        assert data["infidelity"] == pytest.approx(other["infidelity"], rel=1e-3)
        assert data["beta"] == pytest.approx(other["beta"], rel=1e-3, abs=1e-6)
