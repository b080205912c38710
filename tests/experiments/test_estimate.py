"""The estimate a new run shows before it is submitted (POST /api/experiments/estimate/): the
body POST /api/experiments/ takes, refused with the same 4xx words, the same seconds as the run
then stores, nothing stored and no data set built inside the request."""
from __future__ import annotations

import math

import pytest
from django.conf import settings

from experiments import services
from experiments.core.datasets import sample_is_cached
from experiments.models import Experiment

from .conftest import LOCALISATION

pytestmark = pytest.mark.django_db

ESTIMATE = "/api/experiments/estimate/"
FAST_CAUSAL = {"copy_of": "thesis-v1", "name": "thesis-coarse", "params": {"step": 224 * 224 // 8}}


def _body(lite0, **changes):
    return {"name": "estimated run", "model": lite0.pk, "dataset": LOCALISATION,
            "methods": [{"key": "gradcam"}, {"key": "gradcam", "enhance": True}, "baseline_centre"],
            "protocols": ["torchray-pointing-v1", FAST_CAUSAL], **changes}


def _same_as_stored(api, body):
    """Estimate ``body``, then submit it: the estimate is what the run stores."""
    before = Experiment.objects.count()
    answer = api.post(ESTIMATE, body, format="json")
    assert answer.status_code == 200, answer.content
    estimate = answer.json()
    assert Experiment.objects.count() == before, "an estimate stores no run"
    created = api.post("/api/experiments/", body, format="json")
    assert created.status_code == 202, created.content
    run = Experiment.objects.get(pk=created.json()["id"])
    assert estimate["estimated_seconds"] == pytest.approx(run.estimated_seconds, rel=1e-9)
    assert estimate["basis"] == run.estimate_basis
    assert estimate["num_images"] == run.num_images
    assert estimate["units_total"] == run.units_total
    assert estimate["shard_size"] == run.shard_size
    assert estimate["shards"] == run.shards.count() or run.status == Experiment.Status.PREPARING
    return estimate, run


def test_the_estimate_is_what_the_run_stores_and_adds_up(alice_api, lite0):
    estimate, run = _same_as_stored(alice_api, _body(lite0))
    assert (estimate["num_images"], estimate["methods"], estimate["protocols"]) == (3, 3, 2)
    assert len(estimate["rows"]) == 3 * 2
    # seconds = images × Σ over (method, protocol) of the seconds per image
    per_image = sum(row["seconds_per_image"] for row in estimate["rows"])
    assert estimate["estimated_seconds"] == pytest.approx(3 * per_image)
    labels = {(row["method"], row["protocol"]) for row in estimate["rows"]}
    assert ("Grad-CAM + enhancement", "thesis-coarse") in labels and ("Grad-CAM", "torchray-pointing-v1") in labels
    rows = {(row["slot"], row["protocol"]): row for row in estimate["rows"]}
    # nothing measured yet: the priors, and the enhanced slot costs more than the plain one
    assert all(row["source"].startswith("prior") for row in estimate["rows"])
    assert rows[(1, "thesis-coarse")]["seconds_per_image"] > rows[(0, "thesis-coarse")]["seconds_per_image"]
    assert estimate["shards"] == math.ceil(3 / estimate["shard_size"])


def test_more_images_scale_the_estimate_and_measurements_replace_the_priors(alice_api, lite0):
    small = alice_api.post(ESTIMATE, _body(lite0, methods=["gradcam"], protocols=[FAST_CAUSAL]), format="json").json()
    larger = alice_api.post(ESTIMATE, _body(lite0, methods=["gradcam"], protocols=[FAST_CAUSAL],
                                            dataset={**LOCALISATION, "subset": {"mode": "first", "n": 6}}),
                            format="json").json()
    assert larger["estimated_seconds"] == pytest.approx(2 * small["estimated_seconds"])

    body = _body(lite0, methods=["gradcam"], protocols=[FAST_CAUSAL], shard_size=3)
    _, run = _same_as_stored(alice_api, body)
    services.experiment_run_sync(experiment=run)
    measured, again = _same_as_stored(alice_api, body)
    (row,) = measured["rows"]
    assert row["source"] == "measured on 3 images"
    seconds = list(run.records.values_list("seconds", flat=True))
    assert row["seconds_per_image"] == pytest.approx(sum(seconds) / 3)
    assert again.estimated_seconds == pytest.approx(sum(seconds))


def test_the_estimate_needs_no_name_but_the_run_does(alice_api, lite0):
    body = _body(lite0, name="")
    assert alice_api.post(ESTIMATE, body, format="json").status_code == 200
    refused = alice_api.post("/api/experiments/", body, format="json")
    assert refused.status_code == 400


def test_a_generated_set_is_sized_without_being_built(alice_api, lite0):
    dataset = {"kind": "sample-localisation", "options": {"seed": 4242, "num_images": 7}}
    cache = settings.DATA_DIR / "samples"
    assert not sample_is_cached("localisation", cache_dir=cache, seed=4242, num_images=7)
    answer = alice_api.post(ESTIMATE, _body(lite0, dataset=dataset), format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["num_images"] == 7 and answer.json()["prepare"] is True
    assert not sample_is_cached("localisation", cache_dir=cache, seed=4242, num_images=7)


@pytest.mark.parametrize("changes, words", [
    ({"methods": []}, "methods"),
    ({"methods": ["no-such-method"]}, "no-such-method"),
    ({"methods": ["gradcam", "gradcam"]}, "listed twice"),
    ({"protocols": []}, "protocols"),
    ({"protocols": ["no-such-protocol"]}, "no-such-protocol"),
    ({"protocols": ["torchray-pointing-v1", "torchray-pointing-v1"]}, "listed twice"),
    ({"dataset": {"kind": "sample-classification"}, "protocols": ["torchray-pointing-v1"]}, "boxes or masks"),
    ({"dataset": {"kind": "no-such-kind"}}, "unknown data set kind"),
    ({"dataset": {**LOCALISATION, "subset": {"mode": "first", "n": 500}}}, "cannot take 500"),
    ({"dataset": {"kind": "voc2007"}}, "needs the path field"),
    ({"model": 987654}, "no such model"),
    ({"shard_size": 0}, "shard_size"),
])
def test_bad_bodies_are_refused_in_words_as_post_refuses_them(alice_api, lite0, changes, words):
    body = _body(lite0, **changes)
    before = Experiment.objects.count()
    estimate = alice_api.post(ESTIMATE, body, format="json")
    created = alice_api.post("/api/experiments/", body, format="json")
    assert estimate.status_code == 400, estimate.content
    assert created.status_code == 400
    assert words in estimate.content.decode()
    assert estimate.json() == created.json()
    assert Experiment.objects.count() == before


def test_an_anonymous_request_is_refused(lite0):
    from rest_framework.test import APIClient

    assert APIClient().post(ESTIMATE, _body(lite0), format="json").status_code in (401, 403)
