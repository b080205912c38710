"""Workers that die (SIGKILL, with their pool) in the middle of a run or of a map: the work goes
back to the queue by itself and finishes with the same results as an uninterrupted run."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from experiments import selectors, services
from experiments.models import Experiment, Shard
from saliency_site.workers import live_workers

from saliency_site.settings import BASE_DIR

from .conftest import assert_same_records, units_written, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_lost_for_good_has_its_shards_requeued_by_the_sweep(worker_factory, submit, reference):
    # The sweep the rescuer's beat sends may be executed by any worker on the default queue (the
    # session's one too, where the whole suite runs): its reason is looked for in all their logs,
    # in what they wrote during this test.
    logs = {path: path.stat().st_size for path in (BASE_DIR / "data" / "test").glob("*.log")}
    doomed = worker_factory("doomed")
    run = services.experiment_create(name="orphaned", **submit)
    wait_for(lambda: units_written(run) >= 1 and Shard.objects.filter(
        experiment=run, status=Shard.Status.RUNNING, worker=doomed.hostname).exists(), 180, "a shard under way")
    doomed.kill()
    assert units_written(run) < run.units_total, "the run finished before the worker could be killed"
    orphaned = list(Shard.objects.filter(experiment=run, status=Shard.Status.RUNNING,
                                         worker=doomed.hostname).values_list("pk", flat=True))
    assert orphaned
    # Still marked running, but its worker is gone: the progress does not count it.
    live = live_workers(max_age=0)
    assert doomed.hostname not in live
    # (Where the whole suite runs, the session's worker may hold another shard of the run: that one counts.)
    elsewhere = Shard.objects.filter(experiment=run, status=Shard.Status.RUNNING).exclude(worker=doomed.hostname).count()
    assert selectors.experiment_progress(experiment=run)["shards_running"] == elsewhere

    # Another worker (with beat: the sweep every 2 s) takes over; nobody presses "resume".
    worker_factory("rescuer", beat=True)
    wait_for(lambda: Experiment.objects.get(pk=run.pk).is_finished, 300, "the run to finish", poll=0.5)
    run.refresh_from_db()
    assert run.status == Experiment.Status.DONE, run.error
    for shard in Shard.objects.filter(pk__in=orphaned):
        # requeued by the sweep and finished elsewhere (by the rescuer, or by the session's worker
        # where the whole suite runs and it also takes the batch queue)
        assert shard.status == Shard.Status.DONE and shard.attempts >= 2 and shard.worker != doomed.hostname
    written = "".join(path.read_bytes()[logs.get(path, 0):].decode(errors="replace")
                      for path in (BASE_DIR / "data" / "test").glob("*.log"))
    assert "their worker stopped" in written
    assert_same_records(run, reference())


def test_the_sweep_requeues_only_shards_of_gone_workers_and_progress_counts_live_ones(submit):
    """Hand-made states: a fresh heartbeat, a stale one on a live worker still running it, a
    stale one on a live worker that is not running it, and one on a worker nobody knows."""
    run = services.experiment_create(name="states", submit=False, **submit)
    services.experiment_start(experiment=run)
    shards = list(Shard.objects.filter(experiment=run).order_by("index"))
    old, now = timezone.now() - timedelta(seconds=60), timezone.now()

    class Live:
        def __init__(self, running, concurrency=1):
            self.running, self.concurrency = running, concurrency

        def runs(self, name, argument):
            return name == "experiments.tasks.run_shard" and argument in self.running

    states = [("a@h", now), ("a@h", old), ("b@h", old), ("gone@h", old)]
    for shard, (worker, beat) in zip(shards, states):
        Shard.objects.filter(pk=shard.pk).update(status=Shard.Status.RUNNING, worker=worker, heartbeat_at=beat)
    live = {"a@h": Live({shards[1].pk}, concurrency=2), "b@h": Live(set())}
    requeued = services.shards_requeue_stale(live=live, stale_after=10)
    assert sorted(requeued) == sorted([shards[2].pk, shards[3].pk])
    statuses = dict(Shard.objects.filter(experiment=run).values_list("pk", "status"))
    assert [statuses[s.pk] for s in shards] == ["running", "running", "queued", "queued"]
    assert services.shards_requeue_stale(live=live, stale_after=10) == []  # a second sweep: nothing new


def test_a_map_whose_worker_is_killed_is_computed_again(celery_worker, alice, lite0, monkeypatch):
    """RISE (seeded, so the map is reproducible) with 600 masks takes long enough to kill the
    worker in the middle; the worker comes back under its name and computes the map again."""
    from explain import services as explain
    from explain.models import Job

    image = explain.image_create(owner=alice, sample="chelsea")
    explanation_set = explain.explanation_set_create(owner=alice, model=lite0, image=image)
    wait_for(lambda: Job.objects.get(explanation_set=explanation_set, kind="predict").is_finished, 120, "the prediction")
    explain.method_setting_save(owner=alice, model=lite0, method_key="rise", params={"masks": 600})
    [job] = explain.explanation_jobs_create(explanation_set=explanation_set, target=281, methods=[{"key": "rise"}])
    wait_for(lambda: Job.objects.get(pk=job.pk).status == Job.Status.RUNNING, 120, "the map to be under way")
    celery_worker.kill()
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.attempts == 1 and job.worker == celery_worker.hostname

    celery_worker.start()
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 180, "the map", poll=0.5)
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.error
    assert job.attempts == 2

    # The uninterrupted reference, in this process (a row no worker is told about).
    again = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, method_key="rise",
                               target=281, params=job.params)
    explain.job_run(job=again)
    assert again.status == Job.Status.DONE, again.error
    got, want = np.load(job.raw_file.path), np.load(again.raw_file.path)
    assert got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_a_job_whose_worker_keeps_dying_fails_with_the_reason(alice, lite0, celery_worker):
    from explain import services as explain
    from explain.models import ExplanationSet, Job

    image = explain.image_create(owner=alice, sample="coffee")
    explanation_set = ExplanationSet.objects.create(owner=alice, model=lite0, image=image)
    old = timezone.now() - timedelta(seconds=60)

    def running(attempts: int) -> Job:  # rows no worker was told about
        return Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.PREDICT, status=Job.Status.RUNNING,
                                  worker="gone@h", heartbeat_at=old, started_at=old, attempts=attempts)

    worn, fresh = running(Job.MAX_ATTEMPTS), running(1)
    done = explain.jobs_requeue_stale(live={}, stale_after=10)
    assert done == {"requeued": [fresh.pk], "failed": [worn.pk]}
    worn.refresh_from_db()
    assert worn.status == Job.Status.FAILED
    assert "its worker (gone@h) stopped while computing it, 3 times" in worn.error
    fresh.refresh_from_db()
    assert fresh.worker != "gone@h" and fresh.status != Job.Status.FAILED  # queued again (or already taken)
    assert explain.jobs_requeue_stale(live={}, stale_after=10) == {"requeued": [], "failed": []}
    # The requeued job runs to the end on a live worker (and is not left to race the test's teardown).
    wait_for(lambda: Job.objects.get(pk=fresh.pk).status in (Job.Status.DONE, Job.Status.FAILED), 120,
             "the requeued job to finish")
    assert Job.objects.get(pk=fresh.pk).status == Job.Status.DONE

    # A job started MAX_ATTEMPTS times and delivered once more fails instead of running again.
    redelivered = running(Job.MAX_ATTEMPTS)
    explain.job_run(job=redelivered)
    assert redelivered.status == Job.Status.FAILED and "3 times" in redelivered.error
