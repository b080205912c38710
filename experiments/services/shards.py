"""Running a shard: take it, evaluate its images unit by unit, store each unit's records, close the run."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from explain import services as explain_services
from saliency_site.errors import NotAvailable

from ..models import Experiment, Record, Shard
from .aggregation import experiment_aggregate, run_manifest
from .datasets import dataset_open
from .evaluation import Evaluator
from .runs import experiments_release, make_shards, shards_requeue_running

logger = logging.getLogger(__name__)

#: Shard progress (and heartbeat) is written at most this often.
PROGRESS_EVERY_SECONDS = 2.0


def _store(experiment: Experiment, index: int, sample_key: str, method: Mapping[str, Any], rows: list[dict]) -> None:
    """One unit's records in one transaction; a duplicate (re-executed shard) inserts nothing."""
    records = [
        Record(experiment=experiment, image_index=index, image_key=sample_key[:300], method_slot=method["slot"],
               method_key=method["key"], enhance=bool(method.get("enhance")), **row)
        for row in rows
    ]
    with transaction.atomic():
        Record.objects.bulk_create(records, ignore_conflicts=True)


def _cancelled(experiment_id: int) -> bool:
    return not Experiment.objects.filter(
        pk=experiment_id, status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING]).exists()


def _take(shard_id: int, worker: str) -> Shard | None:
    """Mark the shard as running here; ``None`` when there is nothing to do."""
    with transaction.atomic():
        shard = Shard.objects.select_for_update().select_related("experiment").filter(pk=shard_id).first()
        if shard is None or shard.status in (Shard.Status.DONE, Shard.Status.CANCELLED):
            return None
        exp = shard.experiment
        if exp.status not in (Experiment.Status.QUEUED, Experiment.Status.RUNNING):
            return None
        now = timezone.now()
        shard.status = Shard.Status.RUNNING
        shard.attempts += 1
        shard.worker = worker[:200]
        shard.heartbeat_at = now
        shard.started_at = shard.started_at or now
        shard.save(update_fields=["status", "attempts", "worker", "heartbeat_at", "started_at"])
        if exp.status == Experiment.Status.QUEUED:
            Experiment.objects.filter(pk=exp.pk, status=Experiment.Status.QUEUED).update(
                status=Experiment.Status.RUNNING, started_at=now)
            exp.status, exp.started_at = Experiment.Status.RUNNING, now
        return shard


def shard_run(*, shard: Shard, worker: str = "", should_yield: Callable[[], bool] | None = None) -> Shard:
    """Evaluate the shard's images (every method, every protocol), skipping finished units.

    Idempotent: run it again after a crash, or twice at once, and the records come out the
    same. Per-image failures are records; a failure to load the model or the data set fails
    the run with the message.

    The images go in groups (:meth:`Evaluator.image_group_size`, one image where no protocol
    pools its passes) whose model passes share forward batches. ``should_yield`` is asked
    between groups (a worker that also serves interactive work asks whether some is waiting);
    when it says yes the shard goes back to the queue for its remaining images and returns,
    handing the worker over.
    """
    taken = _take(shard.pk, worker)
    if taken is None:
        return Shard.objects.get(pk=shard.pk) if Shard.objects.filter(pk=shard.pk).exists() else shard
    shard = taken
    exp = shard.experiment
    try:
        if exp.model is None:
            raise NotAvailable("the run's model has been deleted")
        classifier = explain_services.classifier_load(model=exp.model)
        dataset = dataset_open(spec=exp.dataset)
        keys = exp.dataset_info.get("keys", [])
        if len(dataset) != exp.num_images or [s.key for s in dataset.samples[shard.start:shard.stop]] != keys[shard.start:shard.stop]:
            raise ValueError("the data set on disk no longer matches the one this run was submitted with "
                             "(images added, removed or renamed); submit a new run")
    except (OperationalError, InterfaceError):
        raise  # the database went away: the task is retried, the run does not fail
    except ValueError as error:
        logger.info("run %s failed: %s", exp.pk, error)
        _fail(exp, str(error))
        return shard
    except Exception as error:
        logger.exception("run %s could not start shard %s", exp.pk, shard.index)
        _fail(exp, f"internal error: {type(error).__name__}: {error}")
        return shard

    evaluator = Evaluator(classifier=classifier, experiment=exp)
    methods = exp.methods
    done = set(Record.objects.filter(experiment=exp, image_index__gte=shard.start, image_index__lt=shard.stop)
               .values_list("image_index", "method_slot").distinct())
    units_done = len(done)
    last_save = time.monotonic()
    first = True
    todo = [i for i in range(shard.start, shard.stop) if any((i, m["slot"]) not in done for m in methods)]
    group_size = evaluator.image_group_size()
    for group_start in range(0, len(todo), group_size):
        group = todo[group_start:group_start + group_size]
        if _cancelled(exp.pk):
            logger.info("run %s was cancelled; shard %s stops at image %s", exp.pk, shard.index, group[0])
            return shard
        # Never before the first group: a shard that yielded makes progress each time it is taken.
        if not first and should_yield is not None and should_yield():
            Shard.objects.filter(pk=shard.pk).update(
                units_done=units_done, units_computed=shard.units_computed, busy_seconds=shard.busy_seconds,
                heartbeat_at=timezone.now())
            logger.info("shard %s of run %s yields to interactive work at image %s", shard.index, exp.pk, group[0])
            shards_requeue_running([shard.pk], "yielding to interactive work")
            return shard
        first = False
        items = []
        for index in group:
            sample = dataset[index]
            try:
                image = sample.load_image()
            except Exception as error:  # noqa: BLE001 - a broken image is one failed record per method
                image = error
            items.append((index, sample, image))
        for method in methods:
            pending = [item for item in items if (item[0], method["slot"]) not in done]
            if not pending:
                continue
            started = time.perf_counter()
            results = evaluator.units(items=pending, method=method)
            seconds = (time.perf_counter() - started) / len(pending)
            for (index, sample, _), rows in zip(pending, results):
                _store(exp, index, sample.key, method, rows)
                units_done += 1
                shard.units_computed += 1
                shard.busy_seconds += seconds
            if time.monotonic() - last_save >= PROGRESS_EVERY_SECONDS:
                last_save = time.monotonic()
                Shard.objects.filter(pk=shard.pk).update(
                    units_done=units_done, units_computed=shard.units_computed, busy_seconds=shard.busy_seconds,
                    heartbeat_at=timezone.now())
    shard.units_done = units_done
    shard.status = Shard.Status.DONE
    shard.finished_at = timezone.now()
    shard.heartbeat_at = shard.finished_at
    shard.manifest = {"device": str(classifier.device), "worker": worker,
                      "methods": {str(k): v for k, v in evaluator.manifests.items()}}
    Shard.objects.filter(pk=shard.pk).exclude(status=Shard.Status.CANCELLED).update(
        status=shard.status, units_done=shard.units_done, units_computed=shard.units_computed,
        busy_seconds=shard.busy_seconds, finished_at=shard.finished_at, heartbeat_at=shard.heartbeat_at,
        manifest=shard.manifest)
    experiment_complete_if_done(experiment=exp)
    return shard


def _fail(experiment: Experiment, message: str) -> None:
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if exp.is_finished:
            return
        exp.shards.exclude(status=Shard.Status.DONE).update(status=Shard.Status.CANCELLED)
        exp.mark_failed(message)
    experiments_release(owner=experiment.owner)


def experiment_complete_if_done(*, experiment: Experiment) -> Experiment:
    """Aggregate and close the run once every shard is done (exactly once, under a row lock)."""
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if exp.status not in (Experiment.Status.QUEUED, Experiment.Status.RUNNING):
            return exp
        if exp.shards.exclude(status=Shard.Status.DONE).exists():
            return exp
        exp.results = experiment_aggregate(experiment=exp)
        exp.manifest = run_manifest(exp)
        exp.status = Experiment.Status.DONE
        exp.finished_at = timezone.now()
        exp.started_at = exp.started_at or exp.finished_at
        exp.save(update_fields=["results", "manifest", "status", "finished_at", "started_at"])
    experiments_release(owner=exp.owner)
    return exp


def experiment_run_sync(*, experiment: Experiment, worker: str = "command line") -> Experiment:
    """Run a run's shards one after the other in this process (the command line's debugging path)."""
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if exp.status == Experiment.Status.SCHEDULED:
            if not exp.shards.exists():
                make_shards(exp)
            exp.status = Experiment.Status.QUEUED
            exp.save(update_fields=["status"])
    for shard in Shard.objects.filter(experiment=experiment).order_by("index"):
        shard_run(shard=shard, worker=worker)
    experiment.refresh_from_db()
    return experiment
