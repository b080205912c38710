"""Celery adapters: a primary key in, the row loaded, one service called.

``run_shard`` is routed to the ``batch`` queue (settings). Late acknowledgement (settings) means
a shard whose worker dies is delivered again; the service makes that harmless. A shard that
loses its database connection (PostgreSQL restarted) is retried by Celery with a back-off;
``requeue_stale_shards`` (run by Celery beat) requeues shards whose worker is gone.
"""
from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from saliency_site.workers import SWEEP_SNAPSHOT_AGE_S, live_workers

from . import services
from .models import Experiment, Shard

logger = logging.getLogger(__name__)


INTERACTIVE_QUEUE = "interactive"

#: A running shard whose heartbeat is this many progress intervals old, on a worker that does
#: not answer (or answers without running it), is requeued.
STALE_AFTER_INTERVALS = 5

#: A run still preparing this long after its data-set message was sent has its message sent again
#: (building the largest generated set takes well under a minute).
PREPARE_RESEND_AFTER_S = 120

#: Lost connections (a restarted PostgreSQL or Redis) are worth waiting out, not failing the run.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError)


@shared_task(name="experiments.tasks.run_shard", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=2, retry_backoff_max=60, max_retries=None)
def run_shard(self, shard_id: int) -> None:
    shard = Shard.objects.filter(pk=shard_id).first()
    if shard is None or shard.status in (Shard.Status.DONE, Shard.Status.CANCELLED):
        return  # deleted meanwhile, or a redelivery of finished work
    services.shard_run(shard=shard, worker=self.request.hostname or "", should_yield=_interactive_waiting(self.app))


def _interactive_waiting(app):
    """On a worker that also serves the ``interactive`` queue: a check whether a message waits
    there (one Redis LLEN per image). ``None`` on a batch-only worker: nothing to yield to."""
    if INTERACTIVE_QUEUE not in (app.amqp.queues.consume_from or {}):
        return None

    def waiting() -> bool:
        try:
            with app.connection_for_read() as connection:
                return connection.default_channel.queue_declare(queue=INTERACTIVE_QUEUE, passive=True).message_count > 0
        except Exception:
            logger.warning("could not look at the interactive queue", exc_info=True)
            return False

    return waiting


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
    except Exception:
        logger.exception("could not requeue the shards %s held before it restarted", hostname)


@shared_task(name="experiments.tasks.requeue_stale_shards", ignore_result=True)
def requeue_stale_shards() -> list[int]:
    """Periodic (Celery beat): shards marked running on a worker that is gone go back to the queue."""
    live = live_workers(max_age=SWEEP_SNAPSHOT_AGE_S)
    if live is None:
        return []  # the broker is down: nothing can be requeued, and nothing is known about workers
    return services.shards_requeue_stale(
        live=live, stale_after=STALE_AFTER_INTERVALS * services.PROGRESS_EVERY_SECONDS)


@shared_task(name="experiments.tasks.resend_lost_preparations", ignore_result=True)
def resend_lost_preparations() -> list[int]:
    """Periodic (Celery beat): runs left "preparing" by a lost message or a dead worker are sent again."""
    return services.experiments_prepare_resend(older_than=PREPARE_RESEND_AFTER_S)
