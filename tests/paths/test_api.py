"""Paths through the experiments API: data-root escapes (files and folders) answer 403, option
values are validated (400, no file content echoed), the drill-down image route goes through the
same open-time check, and the generated localisation set is built on a worker, not in the request."""
from __future__ import annotations

import json
import shutil
import time

import pytest
from django.conf import settings as django_settings

from experiments import services
from experiments.core.datasets import sample_is_cached
from experiments.models import Experiment
from tests.experiments_core.test_datasets import write_jpeg, write_voc

CAUSAL = {"copy_of": "thesis-v1", "name": "thesis-paths", "params": {"step": 224 * 224 // 4}}
SECRET = "SECRET_TOKEN_4711"


def _submit(api, lite0, dataset, **changes):
    body = {"name": "paths run", "model": lite0.pk, "dataset": dataset, "methods": ["baseline_centre"],
            "protocols": [CAUSAL], "shard_size": 1, **changes}
    return api.post("/api/experiments/", body, format="json")


@pytest.fixture
def roots(tmp_path, settings):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    write_jpeg(outside / "private.jpg", 50, 40, value=7)
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    settings.DATA_ROOTS = [data]
    return data, outside


@pytest.mark.django_db
def test_voc_with_an_image_linked_outside_answers_403(alice_api, lite0, roots):
    data, outside = roots
    root = write_voc(data)
    image = root / "VOC2007" / "JPEGImages" / "000001.jpg"
    image.unlink()
    image.symlink_to(outside / "private.jpg")
    response = _submit(alice_api, lite0, {"kind": "voc2007", "paths": {"root": str(root)}})
    assert response.status_code == 403, response.content
    assert "links outside the configured data roots" in response.content.decode()
    assert str(outside) not in response.content.decode()
    assert not Experiment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("image_set", ["../../../outside/secret", "/etc/passwd", "test/../test", ["test"], 7])
def test_voc_image_set_must_be_a_name(alice_api, lite0, roots, image_set):
    data, _ = roots
    root = write_voc(data)
    response = _submit(alice_api, lite0, {"kind": "voc2007", "paths": {"root": str(root)},
                                          "options": {"image_set": image_set}})
    assert response.status_code == 400, response.content
    body = response.content.decode()
    assert "image_set must be a name" in body and SECRET not in body
    assert not Experiment.objects.exists()


@pytest.mark.django_db
def test_drill_down_image_goes_through_the_open_time_check(alice_api, lite0, roots):
    data, outside = roots
    root = write_voc(data)
    response = _submit(alice_api, lite0, {"kind": "voc2007", "paths": {"root": str(root)}})
    assert response.status_code == 202, response.content
    url = response.json()["url"]
    assert alice_api.get(f"{url}images/0/").status_code == 200
    # The link is swapped after submission: the route refuses it instead of serving the outside file.
    image = root / "VOC2007" / "JPEGImages" / "000001.jpg"
    image.unlink()
    image.symlink_to(outside / "private.jpg")
    refused = alice_api.get(f"{url}images/0/")
    assert refused.status_code == 403, refused.content
    assert refused["Content-Type"].startswith("application/json")
    assert str(outside) not in refused.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("options, message", [
    ({"num_images": 1000}, "num_images must be a whole number from 1 to 200"),
    ({"num_images": 0}, "num_images"),
    ({"num_images": "12"}, "num_images must be a whole number"),
    ({"seed": -1}, "seed must be a whole number from 0 to 2147483647"),
    ({"seed": 2**31}, "seed"),
    ({"seed": [1]}, "seed must be a whole number"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"colour": "red"}, "takes the option(s) ['seed', 'num_images']"),
    ("seed=1", "dataset.options must be an object"),
])
def test_localisation_options_are_bounded(alice_api, lite0, tmp_path, settings, options, message):
    settings.DATA_DIR = tmp_path
    response = _submit(alice_api, lite0, {"kind": "sample-localisation", "options": options})
    assert response.status_code == 400, response.content
    assert message in json.dumps(response.json(), ensure_ascii=False) or message in response.content.decode()
    assert not Experiment.objects.exists() and not (tmp_path / "samples").exists()


@pytest.mark.django_db
def test_an_uncached_localisation_set_is_not_built_in_the_request(alice_api, lite0, tmp_path, settings):
    settings.DATA_DIR = tmp_path
    dataset = {"kind": "sample-localisation", "options": {"seed": 5, "num_images": 4}, "subset": {"mode": "first", "n": 3}}
    started = time.perf_counter()
    response = _submit(alice_api, lite0, dataset)
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.content
    created = response.json()
    assert created["status"] == "preparing" and created["estimated_seconds"] > 0
    assert created["progress"]["units_total"] == 3
    assert not (tmp_path / "samples").exists(), "the request built images"
    run = Experiment.objects.get(pk=created["id"])
    assert run.shards.count() == 0 and run.num_images == 3
    assert alice_api.get(f"{created['url']}images/0/").status_code == 409
    assert _submit(alice_api, lite0, {**dataset, "subset": {"mode": "first", "n": 5}}).status_code == 400

    prepared = services.experiment_prepare(experiment=run)     # what the worker's task does
    assert prepared.status == Experiment.Status.QUEUED and prepared.shards.count() == 3
    assert prepared.dataset_info["keys"] == ["loc-000", "loc-001", "loc-002"]
    assert sample_is_cached("localisation", cache_dir=tmp_path / "samples", seed=5, num_images=4)
    assert services.experiment_prepare(experiment=run).shards.count() == 3   # a redelivery changes nothing
    assert elapsed < 30  # a sanity bound only: the build is what the worker does


@pytest.mark.django_db
def test_a_cancelled_preparing_run_stays_cancelled(alice_api, lite0, tmp_path, settings):
    settings.DATA_DIR = tmp_path
    created = _submit(alice_api, lite0, {"kind": "sample-localisation", "options": {"seed": 6, "num_images": 2}}).json()
    assert alice_api.post(f"{created['url']}cancel/").status_code == 200
    run = services.experiment_prepare(experiment=Experiment.objects.get(pk=created["id"]))
    assert run.status == Experiment.Status.CANCELLED and run.shards.count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_worker_builds_the_set_and_runs_it(alice, lite0, celery_worker):
    # The worker has its own settings: use the site's cache, with a seed no other test uses.
    seed, n = 424242, 2
    folder = django_settings.DATA_DIR / "samples" / f"sample-v1-localisation-seed{seed}-n{n}"
    shutil.rmtree(folder, ignore_errors=True)
    run = services.experiment_create(owner=alice, name="built on a worker", model=lite0,
                                     dataset={"kind": "sample-localisation", "options": {"seed": seed, "num_images": n}},
                                     methods=["baseline_centre"], protocols=[CAUSAL], shard_size=1)
    assert run.status == Experiment.Status.PREPARING and not folder.exists()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not Experiment.objects.get(pk=run.pk).is_finished:
        time.sleep(0.5)
    run.refresh_from_db()
    assert run.status == Experiment.Status.DONE, (run.status, run.error)
    assert run.dataset_info["keys"] == ["loc-000", "loc-001"] and run.records.filter(ok=True).count() > 0
    assert folder.is_dir()
