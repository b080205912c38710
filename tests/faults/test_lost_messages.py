"""A run whose "build the data set" message was lost (a Redis that died before persisting it, a
worker that died building the set) does not stay "preparing": the periodic sweep sends it again
and the run finishes on a real worker, without an operator."""
from __future__ import annotations

import shutil

import pytest
from django.conf import settings

from experiments import services, tasks
from experiments.models import Experiment

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CAUSAL = {"copy_of": "thesis-v1", "name": "thesis-lost", "params": {"step": 224 * 224 // 4}}


def test_a_run_whose_preparation_message_was_lost_is_prepared_by_the_sweep(alice, lite0, celery_worker, monkeypatch):
    # The message is lost on its way: nothing reaches the broker (this is the one fault staged by hand).
    seed, n = 31337, 2
    shutil.rmtree(settings.DATA_DIR / "samples" / f"sample-v1-localisation-seed{seed}-n{n}", ignore_errors=True)
    monkeypatch.setattr(tasks.prepare_dataset, "delay", lambda *args, **kwargs: None)
    run = services.experiment_create(owner=alice, name="lost message", model=lite0,
                                     dataset={"kind": "sample-localisation", "options": {"seed": seed, "num_images": n}},
                                     methods=["baseline_centre"], protocols=[CAUSAL], shard_size=1)
    monkeypatch.undo()
    assert run.status == Experiment.Status.PREPARING and run.prepare_sent_at is not None

    # Sent recently: not yet suspected lost.
    assert services.experiments_prepare_resend(older_than=3600) == []
    # Suspected lost: sent again, to the real worker, which builds the set and runs the run.
    assert services.experiments_prepare_resend(older_than=0) == [run.pk]
    wait_for(lambda: Experiment.objects.get(pk=run.pk).is_finished, 180, "the run to finish", poll=0.5)
    run.refresh_from_db()
    assert run.status == Experiment.Status.DONE, run.error
    assert run.records.filter(ok=True).count() == 2
    # Finished runs are never sent again.
    assert services.experiments_prepare_resend(older_than=0) == []


def test_the_sweep_is_on_the_beat_schedule():
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values()
                 if e["task"] == "experiments.tasks.resend_lost_preparations")
    assert entry["schedule"] <= tasks.PREPARE_RESEND_AFTER_S
