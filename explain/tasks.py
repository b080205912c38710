"""Celery adapters: a primary key in, the row loaded, one service called. Routed to the ``gpu`` queue."""
from __future__ import annotations

from celery import shared_task

from . import services
from .models import Job


@shared_task(name="explain.tasks.run_job", acks_late=True)
def run_job(job_id: int) -> None:
    job = Job.objects.select_related("explanation_set__model", "explanation_set__image").filter(pk=job_id).first()
    if job is None or job.is_finished:
        return  # deleted meanwhile, or a redelivery of finished work
    services.job_run(job=job)
