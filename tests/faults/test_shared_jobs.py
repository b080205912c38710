"""One Generate with several CAM methods: a real worker computes their shared pass once, each job
still finishes with its own map, status and seconds, and a group whose worker is lost goes back
to the queue like a lone job."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import torch
from django.utils import timezone

from explain import services as explain
from explain.core import imaging
from explain.core.engine import explain as explain_one
from explain.models import ExplanationSet, Job
from saliency_site.workers import Worker

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CAMS = ["gradcam", "gradcampp", "xgradcam", "layercam"]


def test_a_worker_computes_the_shared_pass_once_and_finishes_every_job(celery_worker, alice, lite0):
    image = explain.image_create(owner=alice, sample="chelsea")
    explanation_set = explain.explanation_set_create(owner=alice, model=lite0, image=image)
    wait_for(lambda: Job.objects.get(explanation_set=explanation_set, kind="predict").is_finished, 120, "the prediction")
    requested = [{"key": k} for k in CAMS] + [{"key": "gradcam", "enhance": True}]
    jobs = explain.explanation_jobs_create(explanation_set=explanation_set, target=281, methods=requested)
    wait_for(lambda: all(j.is_finished for j in Job.objects.filter(pk__in=[j.pk for j in jobs])), 180, "the maps")

    rows = {j.pk: j for j in Job.objects.filter(pk__in=[j.pk for j in jobs])}
    plain, enhanced = [rows[j.pk] for j in jobs[:4]], rows[jobs[4].pk]
    assert all(j.status == Job.Status.DONE for j in rows.values()), [j.error for j in rows.values()]
    for job in plain:
        assert job.manifest["shared_pass"]["methods"] == CAMS
        assert job.seconds is not None and job.seconds >= job.manifest["shared_pass"]["seconds"]
        assert job.map_file and job.raw_file and job.attempts == 1
    assert "shared_pass" not in enhanced.manifest  # its windows are its own passes
    assert len({j.raw_file.name for j in rows.values()}) == len(rows)
    log = celery_worker.log_path.read_text()
    assert "explain.tasks.run_jobs" in log

    # Each map equals the method's own, computed here (float32 rounding: another thread count).
    classifier = explain.classifier_load(model=lite0)
    x, _ = imaging.preprocess(imaging.load_image(image.file.path), classifier)
    for job in plain:
        [want] = explain_one(classifier, x[None], job.method_key, targets=[281])
        got = torch.from_numpy(np.load(job.raw_file.path))
        assert torch.allclose(got, want.saliency, rtol=1e-4, atol=1e-6 * float(want.saliency.max())), job.method_key


def _group(alice, lite0, n: int = 3, **fields) -> list[Job]:
    image = explain.image_create(owner=alice, sample="coffee")
    explanation_set = ExplanationSet.objects.create(owner=alice, model=lite0, image=image)
    return [Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, method_key=key, target=1,
                               **fields) for key in CAMS[:n]]


def test_the_sweep_leaves_a_live_group_alone_and_requeues_a_lost_one(alice, lite0):
    old = timezone.now() - timedelta(seconds=60)
    running = dict(status=Job.Status.RUNNING, heartbeat_at=old, started_at=old, attempts=1)
    busy = _group(alice, lite0, worker="live@h", **running)
    lost = _group(alice, lite0, worker="live@h", **running)  # the live worker holds no task for these
    gone = _group(alice, lite0, worker="gone@h", **running)
    live = {"live@h": Worker("live@h", tasks=[("explain.tasks.run_jobs", [j.pk for j in busy])])}
    done = explain.jobs_requeue_stale(live=live, stale_after=10)
    assert sorted(done["requeued"]) == sorted(j.pk for j in lost + gone) and done["failed"] == []
    assert set(Job.objects.filter(pk__in=[j.pk for j in busy]).values_list("status", flat=True)) == {"running"}


def test_a_redelivered_group_computes_only_what_is_left(alice, lite0):
    jobs = _group(alice, lite0, n=3)
    Job.objects.filter(pk=jobs[0].pk).update(status=Job.Status.DONE, finished_at=timezone.now())
    Job.objects.filter(pk=jobs[2].pk).update(attempts=Job.MAX_ATTEMPTS)
    rows = list(Job.objects.select_related("explanation_set__model", "explanation_set__image")
                .filter(pk__in=[j.pk for j in jobs]).order_by("id"))
    explain.jobs_run(jobs=rows, worker="here@h")
    first, second, third = (Job.objects.get(pk=j.pk) for j in jobs)
    assert first.status == Job.Status.DONE and not first.raw_file      # left as it was
    assert second.status == Job.Status.DONE and second.raw_file and second.attempts == 1
    assert third.status == Job.Status.FAILED and "3 times" in third.error


def test_a_failing_group_fails_each_job_with_the_reason(alice, lite0):
    jobs = _group(alice, lite0, n=2, params={"layer": "no.such.layer"})
    rows = list(Job.objects.select_related("explanation_set__model", "explanation_set__image")
                .filter(pk__in=[j.pk for j in jobs]))
    explain.jobs_run(jobs=rows, worker="here@h")
    for job in Job.objects.filter(pk__in=[j.pk for j in jobs]):
        assert job.status == Job.Status.FAILED and "no.such.layer" in job.error
