"""Interactive work does not wait for experiments: a dedicated interactive worker starts a map
while the batch worker is busy, and a shard on a shared worker yields between images."""
from __future__ import annotations

import pytest
from django.conf import settings

from experiments import services
from experiments.models import Experiment, Shard

from .conftest import COARSE, assert_same_records, units_written, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture()
def only_these_workers(celery_worker):
    """The session's worker serves every queue: stop it, so the test's workers alone decide."""
    celery_worker.stop()
    yield
    celery_worker.start()


def _predict(owner, model):
    from explain import services as explain
    from explain.models import Job

    image = explain.image_create(owner=owner, sample="chelsea")
    explanation_set = explain.explanation_set_create(owner=owner, model=model, image=image)
    return Job.objects.get(explanation_set=explanation_set)


def _one_long_shard(alice, lite0, images: int = 4):
    return dict(owner=alice, model=lite0,
                dataset={"kind": "sample-localisation", "subset": {"mode": "first", "n": images}},
                methods=["gradcam", "baseline_random"], protocols=[COARSE, "torchray-pointing-v1"], shard_size=images)


def test_a_map_starts_while_the_batch_worker_is_busy(only_these_workers, worker_factory, alice, lite0):
    from explain.models import Job

    worker_factory("batchonly", queues="batch")
    log = settings.BASE_DIR / "data" / "test" / "interactive.log"     # appended to by every start
    logged_before = log.stat().st_size if log.exists() else 0
    worker_factory("interactive", queues="interactive,default")
    # Its pool process loaded the Explain page's first model as it started (settings.WARM_MODELS).
    wait_for(lambda: b"warmed efficientnet_lite0 in" in log.read_bytes()[logged_before:], 60,
             "the interactive worker to warm its model")
    run = services.experiment_create(name="busy", **_one_long_shard(alice, lite0, images=8))
    wait_for(lambda: units_written(run) >= 1, 180, "the shard to be under way")
    job = _predict(alice, lite0)
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 120, "the prediction")
    job.refresh_from_db()
    shard = Shard.objects.get(experiment=run)
    assert job.status == Job.Status.DONE, job.error
    assert job.worker.startswith("interactive@")
    # It started while the shard was still being computed, not after it.
    assert shard.status == Shard.Status.RUNNING or job.started_at < shard.finished_at
    print(f"prediction waited {(job.started_at - job.created_at).total_seconds():.2f} s for a worker")
    services.experiment_cancel(experiment=run)


def test_a_shard_yields_to_interactive_work_on_a_shared_worker(only_these_workers, worker_factory, alice, lite0):
    from explain.models import Job

    shared = worker_factory("shared", queues="interactive,batch,default")
    submit = _one_long_shard(alice, lite0)
    run = services.experiment_create(name="shared", **submit)
    wait_for(lambda: units_written(run) >= 1, 180, "the shard to be under way")
    job = _predict(alice, lite0)
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 180, "the prediction")
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.error and job.worker == shared.hostname
    at_prediction = units_written(run)
    wait_for(lambda: Experiment.objects.get(pk=run.pk).is_finished, 300, "the run to finish", poll=0.5)
    run.refresh_from_db()
    shard = Shard.objects.get(experiment=run)
    assert run.status == Experiment.Status.DONE, run.error
    # The one-shard run was not over when the map was done: the shard had handed the worker over
    # between images and was taken again afterwards.
    assert at_prediction < run.units_total and job.finished_at < shard.finished_at
    assert shard.attempts >= 2
    assert "yields to interactive work" in shared.log_path.read_text()
    reference = services.experiment_run_sync(
        experiment=services.experiment_create(name="reference", submit=False, **submit))
    assert_same_records(run, reference)
