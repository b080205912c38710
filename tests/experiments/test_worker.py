"""A run on a real Celery worker that is killed (SIGKILL) in the middle and restarted: the
final records equal those of an uninterrupted run, none duplicated, none lost."""
from __future__ import annotations

import time

import pytest

from experiments import services
from experiments.models import Experiment, Record, Shard

pytestmark = pytest.mark.django_db(transaction=True)

COARSE = {"copy_of": "thesis-v1", "name": "thesis-coarse4", "params": {"step": 224 * 224 // 4}}
DATASET = {"kind": "sample-localisation", "subset": {"mode": "first", "n": 6}}


def _wait(condition, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _key_and_values(run):
    return sorted(
        ((r.image_index, r.method_slot, r.protocol, r.class_id, r.variant, r.ok), r.data)
        for r in Record.objects.filter(experiment=run)
    )


def test_a_killed_worker_resumes_the_run_without_duplicates_or_losses(alice, lite0, celery_worker, monkeypatch):
    submit = dict(owner=alice, model=lite0, dataset=DATASET, methods=["gradcam", "baseline_random"],
                  protocols=[COARSE, "torchray-pointing-v1"], shard_size=1)
    run = services.experiment_create(name="killed", **submit)
    total = run.units_total
    assert run.status == Experiment.Status.QUEUED and run.shards.count() == 6

    # Kill the worker once it has written some records but not all.
    done_at_kill = _wait(lambda: Record.objects.filter(experiment=run).values("image_index", "method_slot").distinct().count(),
                         120, "the first records")
    celery_worker.kill()
    written = Record.objects.filter(experiment=run).values("image_index", "method_slot").distinct().count()
    assert 1 <= done_at_kill <= written < total, "the worker finished before it could be killed"
    orphaned = list(Shard.objects.filter(experiment=run, status=Shard.Status.RUNNING).values_list("pk", flat=True))
    assert Experiment.objects.get(pk=run.pk).status == Experiment.Status.RUNNING

    # The same worker comes back (as after a site restart) and finishes the run. One torch
    # thread: the test machine's two cores are shared.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    celery_worker.start()
    _wait(lambda: Experiment.objects.get(pk=run.pk).is_finished, 180, "the run to finish", poll=0.5)
    run.refresh_from_db()
    assert run.status == Experiment.Status.DONE, run.error
    assert all(s.status == Shard.Status.DONE for s in run.shards.all())
    assert all(s.attempts >= 2 for s in Shard.objects.filter(pk__in=orphaned))

    # The uninterrupted reference, computed in this process.
    reference = services.experiment_run_sync(experiment=services.experiment_create(name="reference", submit=False, **submit))
    resumed, expected = _key_and_values(run), _key_and_values(reference)
    got_keys, want_keys = [k for k, _ in resumed], [k for k, _ in expected]
    assert got_keys == want_keys, (set(got_keys) ^ set(want_keys),
                                   list(Record.objects.filter(experiment__in=[run, reference], ok=False).values("error")))
    assert len({k for k, _ in resumed}) == len(resumed)          # no duplicated key
    # The worker runs one torch thread and the reference two: oneDNN then sums in another order,
    # so values agree to float32 rounding (1e-6 relative seen on an insertion AUC), not bit for bit.
    for (key, got), (_, want) in zip(resumed, expected):
        assert got.keys() == want.keys(), key
        for name in got:
            assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-5), (key, name)
    assert run.results["protocols"][1]["rows"][0]["values"] == pytest.approx(
        reference.results["protocols"][1]["rows"][0]["values"])


def test_cancelling_a_running_run_stops_its_shard_and_keeps_the_records(alice, lite0, celery_worker):
    run = services.experiment_create(name="cancelled", owner=alice, model=lite0, dataset=DATASET,
                                     methods=["gradcam", "baseline_random"], protocols=[COARSE], shard_size=6)
    _wait(lambda: Record.objects.filter(experiment=run).exists(), 120, "the first records")
    services.experiment_cancel(experiment=run)
    # The shard stops after the image it is on: the record count settles below the total.
    time.sleep(3)
    settled = Record.objects.filter(experiment=run).count()
    time.sleep(3)
    assert Record.objects.filter(experiment=run).count() == settled < run.units_total
    run.refresh_from_db()
    assert run.status == Experiment.Status.CANCELLED and run.shards.get().status == Shard.Status.CANCELLED
    assert run.results["protocols"][0]["rows"][0]["n"] >= 1
