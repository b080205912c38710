"""Celery adapters: primary keys in, the rows loaded, one service called. Routed to the ``interactive`` queue.

A job whose worker process dies is delivered again (late acknowledgement, reject on worker
lost); one whose whole worker vanished is found by ``requeue_stale_jobs`` (Celery beat). Both
end in a retry or, after ``Job.MAX_ATTEMPTS`` starts, a failure with the reason.
"""
from __future__ import annotations

import logging
import threading

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from saliency_site.workers import SWEEP_SNAPSHOT_AGE_S, live_workers

from . import services
from .models import ClassifierModel, Job

logger = logging.getLogger(__name__)

#: A running job this many seconds silent, on a worker that is gone, is requeued.
STALE_AFTER_SECONDS = 10.0


@shared_task(name="explain.tasks.run_job", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(OperationalError, InterfaceError, ConnectionError), retry_backoff=1,
             retry_backoff_max=30, max_retries=10)
def run_job(self, job_id: int) -> None:
    job = Job.objects.select_related("explanation_set__model", "explanation_set__image").filter(pk=job_id).first()
    if job is None or job.is_finished:
        return  # deleted meanwhile, or a redelivery of finished work
    services.job_run(job=job, worker=self.request.hostname or "")


@shared_task(name="explain.tasks.run_jobs", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(OperationalError, InterfaceError, ConnectionError), retry_backoff=1,
             retry_backoff_max=30, max_retries=10)
def run_jobs(self, job_ids: list[int]) -> None:
    """Maps of one set that share a pass (sent together by ``explanation_jobs_create``)."""
    jobs = list(Job.objects.select_related("explanation_set__model", "explanation_set__image")
                .filter(pk__in=job_ids).order_by("id"))
    if all(job.is_finished for job in jobs):
        return  # deleted meanwhile, or a redelivery of finished work
    services.jobs_run(jobs=jobs, worker=self.request.hostname or "")


@shared_task(name="explain.tasks.fetch_weights", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fetch_weights(model_id: int) -> None:
    """Download a built-in's published weights (queued by an operator; the ``default`` queue).
    The outcome is recorded on the row, which the Models page shows."""
    model = ClassifierModel.objects.filter(pk=model_id, owner__isnull=True).first()
    if model is None or model.weights_present or model.weights_fetch_status not in ("queued", "running"):
        return  # gone, installed meanwhile, or a redelivery of a finished fetch
    try:
        services.builtin_weights_fetch(model=model, mirror=model.weights_fetch.get("mirror"))
    except ValueError as error:  # recorded on the row by the service
        logger.info("fetching the weights of %s failed: %s", model.builtin_key, error)


@shared_task(name="explain.tasks.requeue_stale_jobs", ignore_result=True)
def requeue_stale_jobs() -> dict:
    """Periodic (Celery beat): jobs marked running on a worker that is gone are retried or failed."""
    live = live_workers(max_age=SWEEP_SNAPSHOT_AGE_S)
    if live is None:
        return {}
    return services.jobs_requeue_stale(live=live, stale_after=STALE_AFTER_SECONDS)


@worker_process_init.connect
def _warm_models(**kwargs) -> None:
    """Each pool process loads the models ``settings.WARM_MODELS`` names as it starts. In a
    thread: Celery waits only a few seconds for a new pool process to report in, and a job that
    arrives meanwhile waits on the model cache's lock for the load already under way."""
    def warm() -> None:
        try:
            services.classifiers_warm(limit=settings.WARM_MODELS)
        except Exception:
            logger.exception("warming the models failed")
        finally:
            connection.close()   # this thread's own database connection

    threading.Thread(target=warm, name="warm-models", daemon=True).start()


@worker_ready.connect
def _requeue_jobs_after_restart(sender=None, **kwargs) -> None:
    """A worker starting under a name that still holds running jobs was restarted after a
    crash: those jobs are retried at once, not at the next sweep."""
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    try:
        services.jobs_requeue_stale(live={}, stale_after=0, worker=hostname)
    except Exception:
        logger.exception("could not requeue the jobs %s held before it restarted", hostname)
