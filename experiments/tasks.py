"""Celery adapters: a primary key in, the row loaded, one service called.

``run_shard`` is routed to the ``gpu`` queue (settings). Late acknowledgement (settings) means
a shard whose worker dies is delivered again; the service makes that harmless.
"""
from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.utils import timezone

from . import services
from .models import Experiment, Shard

logger = logging.getLogger(__name__)


@shared_task(name="experiments.tasks.run_shard", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_shard(self, shard_id: int) -> None:
    shard = Shard.objects.filter(pk=shard_id).first()
    if shard is None or shard.status in (Shard.Status.DONE, Shard.Status.CANCELLED):
        return  # deleted meanwhile, or a redelivery of finished work
    services.shard_run(shard=shard, worker=self.request.hostname or "")


@shared_task(name="experiments.tasks.start_scheduled", acks_late=True)
def start_scheduled(experiment_id: int) -> None:
    """Released at the run's start time (the task's ``eta``); a redelivery changes nothing."""
    experiment = Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.SCHEDULED).first()
    if experiment is None:
        return
    if experiment.after_current:
        services.experiments_release(owner=experiment.owner)
    else:
        services.experiment_start(experiment=experiment)


@shared_task(name="experiments.tasks.prepare_dataset", acks_late=True)
def prepare_dataset(experiment_id: int) -> None:
    """Build a run's generated data set (the localisation set) on the light ``default`` queue: a
    few seconds of image generation, no model. A "preparing" run is then submitted; for any
    other run the set is only put back in the cache (the drill-down asks after an eviction)."""
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return  # deleted meanwhile
    if experiment.status == Experiment.Status.PREPARING:
        services.experiment_prepare(experiment=experiment)
    elif services.dataset_needs_build(experiment.dataset):
        services.dataset_open(spec=experiment.dataset)


@worker_ready.connect
def _requeue_after_restart(sender=None, **kwargs) -> None:
    """A worker that starts under a name that held shards was restarted after a crash: the
    shards it held are requeued at once instead of after the broker's visibility timeout."""
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    try:
        services.shards_requeue_for_worker(hostname=hostname, held_before=timezone.now())
    except Exception:  # noqa: BLE001 - never stop a worker from starting
        logger.exception("could not requeue the shards %s held before it restarted", hostname)
