"""Explanation sets and their jobs: created and queued on the ``interactive`` queue, run on a worker,
requeued when their worker is gone, deleted with their map files."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from datetime import timedelta
from typing import Any, Iterable, Mapping

import numpy as np
from django.core.files.base import ContentFile
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from saliency_site.errors import InputError, NotAvailable

from .. import job_events
from ..core import imaging, registry
from ..core.engine import explain, explain_many, shared_pass_key
from ..models import ClassifierModel, ExplanationSet, InputImage, Job
from ..selectors import method_availability, method_setting_for
from .classifiers import classifier_load, classifier_model_layers_ensure
from .images import image_input_read

logger = logging.getLogger(__name__)

#: A model load longer than this (seconds) is saved as the job's progress, for its page to show.
PROGRESS_AFTER_S = 0.25


def _enqueue(job: Job) -> None:
    """Send the job to the ``interactive`` queue once its row is committed (a worker must be able to read it)."""
    _enqueue_group([job])


def _enqueue_group(jobs: list[Job]) -> None:
    """Send jobs that share a pass as one task (``run_jobs``), a lone job as ``run_job``, on commit."""
    from ..tasks import run_job, run_jobs   # function-local: the tasks call these services (a real cycle)

    pks = [job.pk for job in jobs]

    def send() -> None:
        try:
            if len(pks) == 1:
                run_job.delay(pks[0])
            else:
                run_jobs.delay(pks)
        except Exception:
            logger.exception("could not queue jobs %s", pks)
            Job.objects.filter(pk__in=pks).update(status=Job.Status.FAILED, finished_at=timezone.now(),
                                                  error="the job queue is unreachable; try again in a moment")
            job_events.announce(pks)

    transaction.on_commit(send)


def _shared_pass_groups(jobs: list[Job]) -> list[list[Job]]:
    """The jobs of one request grouped by the pass they can share (``engine.shared_pass_key``),
    in the order of each group's first job; a job that shares nothing is a group of one.

    The layer is the job's own choice or the model's default for the method's role: equal
    parameters mean an equal layer, without building the network here."""
    groups: dict[Any, list[Job]] = {}
    for job in jobs:
        method = registry.get_method(job.method_key)
        key = shared_pass_key(method, {"layer": job.params.get("layer")}, job.enhance or None)
        if key is not None:
            key = (key, job.target, job.region, json.dumps(job.params, sort_keys=True))
        groups.setdefault(("alone", job.pk) if key is None else key, []).append(job)
    return list(groups.values())


def _require_weights(model: ClassifierModel) -> None:
    if not model.weights_present:
        raise NotAvailable(f"the weights of {model.name} are not installed on this server; "
                           "an operator can add them with `manage.py import_weights`")


@transaction.atomic
def explanation_set_create(*, owner, model: ClassifierModel, image: InputImage) -> ExplanationSet:
    """A new set for ``image`` on ``model``, with its prediction job queued."""
    _require_weights(model)
    explanation_set = ExplanationSet.objects.create(owner=owner, model=model, image=image)
    job = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.PREDICT)
    _enqueue(job)
    return explanation_set


@transaction.atomic
def explanation_jobs_create(*, explanation_set: ExplanationSet, target: int,
                            methods: Iterable[Mapping[str, Any]], region: str = "crop") -> list[Job]:
    """Queue one job per requested method (``{"key": ..., "enhance": bool}``) for class ``target``.

    The owner's saved settings for each method on this model are applied. ``region`` is what
    the maps cover: ``"crop"`` (the model's centre crop) or ``"whole"`` (the image resized
    without a crop; CNNs only). A map the set already has, or is computing, for the same
    request (method, class, enhancement, region and parameters) is not made twice: that job
    is returned instead.
    """
    model = explanation_set.model
    _require_weights(model)
    if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < model.num_classes:
        raise InputError(f"class {target!r} is out of range: {model.name} has classes 0…{model.num_classes - 1}")
    methods = list(methods)
    if not methods:
        raise InputError("choose at least one method")
    if region not in imaging.REGIONS:
        raise InputError(f"region must be one of {list(imaging.REGIONS)}, not {region!r}")
    if region == "whole":
        image = explanation_set.image
        reason = imaging.whole_image_refusal(model.family, image.width, image.height,
                                             int((model.preprocessing or {}).get("input_size", 224)))
        if reason:
            raise InputError(f"{model.name} cannot explain the whole image: {reason}")
    classifier_model_layers_ensure(model=model)  # the engine's reasons for this architecture
    jobs, created = [], []
    for entry in methods:
        key = registry.get_method_class(str(entry.get("key", ""))).key
        reason = method_availability(model, key)
        if reason:
            raise InputError(reason)
        enhance = bool(entry.get("enhance", False))
        setting = method_setting_for(user=explanation_set.owner, model=model, method_key=key)
        request = {"method_key": key, "target": target, "enhance": enhance, "region": region,
                   "params": setting.params if setting else {},
                   "enhance_params": (setting.enhance_params if setting else {}) if enhance else {}}
        existing = (explanation_set.jobs.filter(kind=Job.Kind.EXPLAIN, **request)
                    .exclude(status=Job.Status.FAILED).order_by("created_at", "id").first())
        if existing is None:
            existing = Job.objects.create(explanation_set=explanation_set, kind=Job.Kind.EXPLAIN, **request)
            created.append(existing)
        if existing not in jobs:
            jobs.append(existing)
    for group in _shared_pass_groups(created):
        _enqueue_group(group)
    return jobs


def _top_k(probabilities, class_names, k: int = 5) -> list[dict]:
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return [{"index": int(i), "name": class_names[int(i)], "probability": float(v)} for v, i in zip(values, indices)]


def _may_start(job: Job) -> bool:
    """Whether the job is to be computed now; one started too often is failed with the reason."""
    if job.is_finished:
        return False
    if job.attempts >= Job.MAX_ATTEMPTS:
        job.mark_failed(f"the worker stopped while computing this {job.get_kind_display().lower()} "
                        f"{job.attempts} times (out of memory?); not tried again")
        return False
    return True


def _record_failure(jobs: list[Job], error: Exception) -> None:
    if isinstance(error, ValueError):  # domain errors: the user sees the message
        logger.info("jobs %s failed: %s", [j.pk for j in jobs], error)
        message = str(error)
    else:
        logger.exception("jobs %s crashed", [j.pk for j in jobs])
        message = f"internal error: {type(error).__name__}: {error}"
    for job in jobs:
        job.mark_failed(message)


def job_run(*, job: Job, worker: str = "") -> Job:
    """Do the job's work on this worker: a prediction or one map. Failures are recorded on the row.

    A job delivered again after its worker died mid-way runs again, up to ``Job.MAX_ATTEMPTS``
    starts; then it fails with the reason (a map that kills its worker each time, out of memory
    say, must not take every worker down in turn). A lost database connection is raised for
    the task to retry.
    """
    if not _may_start(job):
        return job
    job.mark_running(worker)
    try:
        if job.kind == Job.Kind.PREDICT:
            _run_prediction(job)
        else:
            _run_explanation(job)
    except (OperationalError, InterfaceError):
        raise  # the database went away: the task retries; marking the row would fail anyway
    except Exception as error:  # noqa: BLE001 - recorded on the row, with the traceback logged
        _record_failure([job], error)
    return job


def jobs_run(*, jobs: list[Job], worker: str = "") -> list[Job]:
    """Maps of one set that share a pass (``_shared_pass_groups``), computed together on this worker.

    The pass runs once (``engine.explain_many``); each job is finished, with its own map, status
    and seconds, as soon as its map is derived, so pages show it at once. Jobs already finished
    (a redelivery) are skipped and one started too often is failed, as in :func:`job_run`; the
    rest are marked running together. A failure fails the jobs not yet finished with the reason.
    """
    if len(jobs) == 1:
        return [job_run(job=jobs[0], worker=worker)]
    todo = [job for job in jobs if _may_start(job)]
    if not todo:
        return jobs
    for job in todo:
        job.mark_running(worker)
    try:
        explanation_set = todo[0].explanation_set
        classifier = classifier_load(model=explanation_set.model)
        x, geometry = image_input_read(image=explanation_set.image, classifier=classifier, region=todo[0].region)
        results = explain_many(classifier, x[None], [job.method_key for job in todo],
                               targets=[todo[0].target], params=[job.params for job in todo], seed=0)
        for index, [result] in results:
            _store_map(todo[index], result, classifier, geometry)
    except (OperationalError, InterfaceError):
        raise
    except Exception as error:  # noqa: BLE001 - recorded on the rows, with the traceback logged
        _record_failure([job for job in todo if not job.is_finished], error)
    return jobs


def _runs_job(alive, pk: int) -> bool:
    """Whether a live worker (``saliency_site.workers.Worker``) is computing job ``pk``, alone or in a group."""
    return alive.runs("explain.tasks.run_job", pk) or any(
        name == "explain.tasks.run_jobs" and isinstance(argument, (list, tuple)) and pk in argument
        for name, argument in alive.tasks)


def jobs_requeue_stale(*, live: Mapping[str, Any], stale_after: float, worker: str | None = None) -> dict[str, list[int]]:
    """Jobs marked running on a worker that is gone (not among ``live``, hostname -> an object
    with ``runs(task_name, argument)``, or alive without running it) and silent for
    ``stale_after`` seconds: queued again, or failed with the reason once they were started
    ``Job.MAX_ATTEMPTS`` times. Never left "running". ``worker`` limits the sweep to one
    worker's jobs (a worker that restarts under its old name: ``live={}``, ``stale_after=0``)."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    done: dict[str, list[int]] = {"requeued": [], "failed": []}
    stale = Job.objects.filter(status=Job.Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff))
    if worker is not None:
        stale = stale.filter(worker=worker)
    for pk, worker, attempts, heartbeat in stale.values_list("pk", "worker", "attempts", "heartbeat_at"):
        alive = live.get(worker)
        if alive is not None and _runs_job(alive, pk):
            continue  # a long map on a live worker
        # The status and heartbeat in the filter: a job that moved on meanwhile is left alone.
        row = Job.objects.filter(pk=pk, status=Job.Status.RUNNING, heartbeat_at=heartbeat)
        if attempts >= Job.MAX_ATTEMPTS:
            if row.update(status=Job.Status.FAILED, finished_at=timezone.now(),
                          error=f"its worker ({worker or 'unknown'}) stopped while computing it, {attempts} times; "
                                "not tried again"):
                done["failed"].append(pk)
        elif row.update(status=Job.Status.QUEUED, worker=""):
            done["requeued"].append(pk)
            _enqueue(Job(pk=pk))
    job_events.announce(done["requeued"] + done["failed"])
    if done["requeued"] or done["failed"]:
        logger.warning("jobs whose worker stopped: requeued %s, failed %s", done["requeued"], done["failed"])
    return done


def _finish(job: Job, **fields) -> None:
    for key, value in fields.items():
        setattr(job, key, value)
    job.status = Job.Status.DONE
    job.progress = 1.0
    job.finished_at = timezone.now()
    job.save()


def _classifier_for(job: Job, *, progress: float):
    """The job's classifier, loaded or from this worker's cache.

    Every save of a job wakes the pages following it (a long poll's answer, then their next
    request), so progress is saved only where a user would see it: after a load that took
    longer than :data:`PROGRESS_AFTER_S`. A warm model's job goes from running to done.
    """
    started = time.perf_counter()
    classifier = classifier_load(model=job.explanation_set.model)
    if time.perf_counter() - started > PROGRESS_AFTER_S:
        job.mark_progress(progress)
    return classifier


def _run_prediction(job: Job) -> None:
    import torch

    explanation_set = job.explanation_set
    classifier = _classifier_for(job, progress=0.4)
    x, _ = image_input_read(image=explanation_set.image, classifier=classifier)
    with torch.no_grad():
        logits = classifier.module(x[None].to(classifier.device)).float().cpu()[0]
    top = _top_k(torch.softmax(logits, dim=0), classifier.class_names)
    explanation_set.predictions = top
    explanation_set.save(update_fields=["predictions"])
    _finish(job, manifest={"model": classifier.name, "weights_checksum": classifier.weights_checksum,
                           "top5": top, "input_shape": [1, *x.shape]})


def _run_explanation(job: Job) -> None:
    explanation_set = job.explanation_set
    classifier = _classifier_for(job, progress=0.2)
    x, geometry = image_input_read(image=explanation_set.image, classifier=classifier, region=job.region)
    enhance = (job.enhance_params or True) if job.enhance else None
    [result] = explain(classifier, x[None], job.method_key, targets=[job.target], params=job.params,
                       enhance=enhance, seed=0)
    _store_map(job, result, classifier, geometry)


def _store_map(job: Job, result, classifier, geometry) -> None:
    """Write the map files of ``result`` (an ``Explanation``) and finish the job."""
    explanation_set = job.explanation_set
    raw = result.saliency.numpy().astype(np.float32)
    image = explanation_set.image
    display = dataclasses.replace(geometry, height=image.display_height, width=image.display_width)
    shown = np.clip(display.to_original(raw), 0, None).astype("<f4")
    buffer = io.BytesIO()
    np.save(buffer, raw)
    job.raw_file.save(f"job-{job.pk}-raw.npy", ContentFile(buffer.getvalue()), save=False)
    job.map_file.save(f"job-{job.pk}-display.f32", ContentFile(shown.tobytes()), save=False)
    manifest = dict(result.manifest)
    manifest["class_name"] = classifier.class_names[result.target]
    manifest["probability"] = float(result.probabilities[result.target])
    manifest["region"] = {"mode": geometry.region, "box": [round(v, 2) for v in geometry.box()]}
    _finish(job, manifest=manifest, seconds=float(manifest.get("seconds", 0.0)), map_max=float(shown.max()))
