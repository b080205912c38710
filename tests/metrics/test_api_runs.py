"""The new metric families run from the API like every other family: a run with ROAD,
infidelity and max-sensitivity (fast copies of their protocols) on the bundled localisation
set finishes on a real Celery worker, with a scored row per method and the cost estimate
counting max-sensitivity's extra explanations."""
from __future__ import annotations

import time

import pytest

from experiments.models import Experiment

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"resize": "square", "size": 64}
PROTOCOLS = [
    {"copy_of": "road-v1", "name": "road-fast", "params": {"fractions": [0.3, 0.7], "preprocessing": SMALL}},
    {"copy_of": "yeh-infidelity-v1", "name": "infidelity-fast", "params": {"samples": 3, "preprocessing": SMALL}},
    {"copy_of": "yeh-max-sensitivity-v1", "name": "sensitivity-fast", "params": {"samples": 2, "preprocessing": SMALL}},
]


def test_a_run_with_the_new_families_finishes_on_a_worker(alice_api, lite0, celery_worker):
    body = {"name": "new families", "model": lite0.pk, "methods": ["gradcam", "baseline_centre"],
            "dataset": {"kind": "sample-localisation", "subset": {"mode": "first", "n": 2}},
            "protocols": PROTOCOLS, "shard_size": 2}
    response = alice_api.post("/api/experiments/", body, format="json")
    assert response.status_code in (201, 202), response.content
    pk = response.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not Experiment.objects.get(pk=pk).is_finished:
        time.sleep(0.5)
    run = Experiment.objects.get(pk=pk)
    assert run.status == Experiment.Status.DONE, (run.status, run.error)
    assert not run.records.filter(ok=False).exists(), list(run.records.filter(ok=False).values_list("error", flat=True))

    basis = run.estimate_basis
    gradcam = next(m["slot"] for m in run.methods if m["key"] == "gradcam")
    assert basis[f"{gradcam}|sensitivity-fast"]["explainer_runs_per_image"] == 3       # the map and two re-explanations
    assert basis[f"{gradcam}|road-fast"]["model_passes_per_image"] == 5
    assert basis[f"{gradcam}|road-fast"]["cpu_seconds_per_image"] > 0              # the imputations' solves

    blocks = {b["name"]: b for b in alice_api.get(f"/api/experiments/{pk}/").json()["results"]["protocols"]}
    assert set(blocks) == {p["name"] for p in PROTOCOLS}
    for name, keys in (("road-fast", {"morf", "lerf", "overall"}), ("infidelity-fast", {"infidelity"}),
                       ("sensitivity-fast", {"max_sensitivity"})):
        for row in blocks[name]["rows"]:
            assert row["n"] == 2 and set(row["values"]) == keys
        assert blocks[name]["rows"][0]["values"][next(iter(keys))] is not None
    # a centre map never changes with the input: zero sensitivity; Grad-CAM's does
    sens = {r["method"]: r["values"]["max_sensitivity"] for r in blocks["sensitivity-fast"]["rows"]}
    assert sens["baseline_centre"] == pytest.approx(0.0) and sens["gradcam"] > 0
