"""A run's life before and around its shards: create, submit, schedule, start, release, cancel, resume, delete."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from explain.models import ClassifierModel
from saliency_site.errors import InputError, NotAvailable, StateError

from ..core.datasets import Dataset
from ..core.protocols import Protocol
from ..models import Experiment, Shard
from .aggregation import experiment_aggregate, run_manifest
from .datasets import DATASET_KINDS, MAX_IMAGES, dataset_expected, dataset_needs_build, dataset_open, dataset_spec
from .estimates import experiment_estimate
from .methods import method_entries
from .protocols import check_protocol_fits, protocol_read

logger = logging.getLogger(__name__)

#: A shard should take about this long, so a crash loses little and many workers share a run.
SHARD_TARGET_SECONDS = 300


def _model_snapshot(model: ClassifierModel) -> dict:
    return {
        "id": model.pk, "name": model.name, "builtin_key": model.builtin_key, "architecture": model.architecture,
        "family": model.family, "num_classes": model.num_classes, "weights_sha256": model.weights_sha256,
    }


@dataclass(frozen=True)
class RunPlan:
    """A validated run request before anything is stored: what a run would be, and its estimate.

    ``prepare``: the data set is generated on a worker first (``data`` is then its expected
    shape, without samples)."""

    spec: dict
    data: Dataset
    num_images: int
    prepare: bool
    methods: list[dict]
    protocols: list[dict]
    estimated_seconds: float
    basis: dict
    shard_size: int


def experiment_plan(*, owner, model: ClassifierModel, dataset: Mapping[str, Any],
                    methods: Sequence[Mapping[str, Any] | str], protocols: Sequence[str | Mapping[str, Any]],
                    shard_size: int | None = None, build: bool = False) -> RunPlan:
    """Validate a run request as :func:`experiment_create` does and estimate it, storing nothing.

    A generated data set not yet built is sized without building it, unless ``build``; a set
    read from disk is listed (its index, not its images), once per process.
    """
    if not model.weights_present:
        raise NotAvailable(f"the weights of {model.name} are not installed on this server; "
                           "an operator can add them with `manage.py import_weights`")
    spec = dataset_spec(dataset)
    prepare = not build and dataset_needs_build(spec)
    data = dataset_expected(spec) if prepare else dataset_open(spec=spec)
    num_images = data.extra["num_images"] if prepare else len(data)
    if num_images == 0:
        raise InputError("the data set has no images")
    if num_images > MAX_IMAGES:
        raise InputError(f"the data set has {num_images} images; take a subset of at most {MAX_IMAGES}")
    entries = method_entries(owner=owner, model=model, methods=list(methods))
    if not protocols:
        raise InputError("choose at least one protocol")
    chosen: list[Protocol] = []
    for raw in protocols:
        protocol = protocol_read(raw)
        if any(p.name == protocol.name for p in chosen):
            raise InputError(f"protocol {protocol.name} is listed twice")
        check_protocol_fits(protocol, DATASET_KINDS[spec["kind"]], data, model)
        chosen.append(protocol)
    pdicts = [p.to_dict() for p in chosen]
    estimate, basis = experiment_estimate(model=model, methods=entries, protocols=pdicts, num_images=num_images)
    if shard_size is None:
        per_image = estimate / num_images
        shard_size = int(min(1000, max(1, SHARD_TARGET_SECONDS // max(per_image, 1e-3))))
    if not isinstance(shard_size, int) or shard_size < 1:
        raise InputError(f"shard_size must be a positive number of images, not {shard_size!r}")
    return RunPlan(spec=spec, data=data, num_images=num_images, prepare=prepare, methods=entries, protocols=pdicts,
                   estimated_seconds=estimate, basis=basis, shard_size=shard_size)


@transaction.atomic
def experiment_create(
    *,
    owner,
    name: str,
    model: ClassifierModel,
    dataset: Mapping[str, Any],
    methods: Sequence[Mapping[str, Any] | str],
    protocols: Sequence[str | Mapping[str, Any]],
    seed: int = 0,
    shard_size: int | None = None,
    start_at: datetime | None = None,
    after_current: bool = False,
    submit: bool = True,
    preset: str = "",
) -> Experiment:
    """Validate and store a run with its estimate; then queue it, schedule it, or (``submit=False``)
    leave it for :func:`experiment_run_sync`. ``preset``: the key of the preset the run
    reproduces (:mod:`.presets`), so its results carry the published numbers beside ours.

    ``start_at`` (aware datetime) schedules the start; ``after_current`` starts it once the
    owner's queued and running runs have finished (runs so marked start one at a time, in
    submission order).

    A data set that has to be generated first (a localisation set not in the cache) is not
    built here, inside the request: the run is stored "preparing" and a task on the light
    ``default`` queue builds it (:func:`experiment_prepare`), then submits the run. With
    ``submit=False`` (the command line) it is built here.
    """
    name = (name or "").strip()
    if not name:
        raise InputError("give the run a name")
    plan = experiment_plan(owner=owner, model=model, dataset=dataset, methods=methods, protocols=protocols,
                           shard_size=shard_size, build=not submit)
    spec, data, num_images, prepare = plan.spec, plan.data, plan.num_images, plan.prepare
    entries, pdicts, estimate, basis, shard_size = (plan.methods, plan.protocols, plan.estimated_seconds,
                                                    plan.basis, plan.shard_size)
    if start_at is not None and timezone.is_naive(start_at):
        raise InputError("start_at needs a time zone (e.g. 2026-11-27T02:00:00+00:00)")
    experiment = Experiment.objects.create(
        owner=owner, name=name[:200], model=model, model_snapshot=_model_snapshot(model),
        dataset=spec, dataset_info={} if prepare else data.describe(), methods=entries, protocols=pdicts,
        seed=int(seed), shard_size=shard_size,
        status=Experiment.Status.PREPARING if prepare else Experiment.Status.SCHEDULED, scheduled_for=start_at,
        after_current=bool(after_current), num_images=num_images, units_total=num_images * len(entries),
        estimated_seconds=estimate, estimate_basis=basis, preset=preset,
        prepare_sent_at=timezone.now() if prepare else None,
    )
    if prepare:
        from ..tasks import prepare_dataset  # here, not at the top: the tasks module imports this package

        pk = experiment.pk
        transaction.on_commit(lambda: prepare_dataset.delay(pk))
    elif submit:
        experiment = experiment_submit(experiment=experiment)
    return experiment


def experiments_prepare_resend(*, older_than: float) -> list[int]:
    """Send the "build the data set" message again for runs that have been preparing for more than
    ``older_than`` seconds since it was last sent: a message lost with a Redis that died before
    persisting it, or a worker that died building the set, would leave the run preparing for ever.

    ``experiment_prepare`` is idempotent, so a resend that crosses a slow build costs one cached
    look-up. Returns the runs' primary keys.
    """
    from ..tasks import prepare_dataset  # here, not at the top: the tasks module imports this package

    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than)
    pks = list(Experiment.objects.filter(status=Experiment.Status.PREPARING)
               .filter(Q(prepare_sent_at__lt=cutoff) | Q(prepare_sent_at__isnull=True, created_at__lt=cutoff))
               .values_list("pk", flat=True))
    for pk in pks:
        # Stamped first: a broker that refuses the message is tried again after another interval.
        Experiment.objects.filter(pk=pk).update(prepare_sent_at=now)
        prepare_dataset.delay(pk)
    if pks:
        logger.warning("runs still preparing after %.0f s: their data-set message was sent again: %s", older_than, pks)
    return pks


def experiment_prepare(*, experiment: Experiment) -> Experiment:
    """Build a "preparing" run's data set (on a worker), store what was read, and submit the run.

    Idempotent: a run no longer preparing (cancelled, or prepared by a redelivery) is left as it
    is. A data set that cannot be built fails the run with the reason.
    """
    exp = Experiment.objects.filter(pk=experiment.pk).first()
    if exp is None or exp.status != Experiment.Status.PREPARING:
        return exp or experiment
    try:
        data = dataset_open(spec=exp.dataset)
    except ValueError as error:
        logger.info("run %s: its data set could not be built: %s", exp.pk, error)
        with transaction.atomic():
            locked = Experiment.objects.select_for_update().get(pk=exp.pk)
            if locked.status == Experiment.Status.PREPARING:
                locked.mark_failed(f"the data set could not be built: {error}")
        return Experiment.objects.get(pk=exp.pk)
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=exp.pk)
        if exp.status != Experiment.Status.PREPARING:
            return exp
        if len(data) != exp.num_images:
            exp.mark_failed(f"the data set has {len(data)} images, not the {exp.num_images} the run was created for")
            return exp
        exp.dataset_info = data.describe()
        exp.status = Experiment.Status.SCHEDULED
        exp.save(update_fields=["dataset_info", "status"])
        return experiment_submit(experiment=exp)


def experiment_submit(*, experiment: Experiment) -> Experiment:
    """Start now, or leave the run scheduled: a start time is handed to Celery as the task's
    ``eta``; "after the current runs" is released when the owner's runs finish."""
    if experiment.scheduled_for is not None and experiment.scheduled_for > timezone.now():
        from ..tasks import start_scheduled  # here, not at the top: the tasks module imports this package

        pk, eta = experiment.pk, experiment.scheduled_for
        transaction.on_commit(lambda: start_scheduled.apply_async((pk,), eta=eta))
        return experiment
    if experiment.after_current:
        experiments_release(owner=experiment.owner)
        experiment.refresh_from_db()
        return experiment
    return experiment_start(experiment=experiment)


def make_shards(experiment: Experiment) -> list[Shard]:
    size = experiment.shard_size
    return Shard.objects.bulk_create([
        Shard(experiment=experiment, index=i, start=start, stop=min(start + size, experiment.num_images))
        for i, start in enumerate(range(0, experiment.num_images, size))
    ])


def _enqueue_shards(shard_ids: Iterable[int]) -> None:
    from ..tasks import run_shard  # here, not at the top: the tasks module imports this package

    ids = list(shard_ids)
    transaction.on_commit(lambda: [run_shard.delay(pk) for pk in ids])


@transaction.atomic
def experiment_start(*, experiment: Experiment) -> Experiment:
    """Split a scheduled run into shards and queue them (once: a second call changes nothing)."""
    exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if exp.status != Experiment.Status.SCHEDULED:
        return exp
    shards = list(exp.shards.all()) or make_shards(exp)
    exp.status = Experiment.Status.QUEUED
    exp.save(update_fields=["status"])
    _enqueue_shards(s.pk for s in shards if s.status == Shard.Status.QUEUED)
    return exp


def experiments_release(*, owner) -> list[Experiment]:
    """Start the owner's scheduled runs whose time has come, and, when none of their runs is
    queued or running, the oldest run waiting for "after the current ones"."""
    now = timezone.now()
    started = []
    due = Experiment.objects.filter(owner=owner, status=Experiment.Status.SCHEDULED, after_current=False,
                                    scheduled_for__lte=now)
    for exp in due:
        started.append(experiment_start(experiment=exp))
    if not Experiment.objects.owned_by(owner).active().exists():
        waiting = (Experiment.objects.filter(owner=owner, status=Experiment.Status.SCHEDULED, after_current=True)
                   .filter(Q(scheduled_for__isnull=True) | Q(scheduled_for__lte=now))
                   .order_by("created_at", "id").first())
        if waiting is not None:
            started.append(experiment_start(experiment=waiting))
    return started


def experiment_cancel(*, experiment: Experiment) -> Experiment:
    """Stop a run: queued shards are dropped, running ones stop after their current image;
    the records so far are kept and aggregated."""
    with transaction.atomic():
        exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if exp.is_finished:
            raise StateError(f"run #{exp.pk} has already {exp.get_status_display().lower()}; nothing to cancel")
        exp.shards.exclude(status=Shard.Status.DONE).update(status=Shard.Status.CANCELLED)
        exp.status = Experiment.Status.CANCELLED
        exp.finished_at = timezone.now()
        exp.results = experiment_aggregate(experiment=exp)
        exp.manifest = run_manifest(exp)
        exp.save(update_fields=["status", "finished_at", "results", "manifest"])
    experiments_release(owner=exp.owner)
    return exp


@transaction.atomic
def experiment_resume(*, experiment: Experiment) -> Experiment:
    """Queue every unfinished shard again (after a lost broker, or a worker that never came
    back). Safe at any time: a shard skips its finished images, a duplicate writes nothing."""
    exp = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if exp.status not in (Experiment.Status.QUEUED, Experiment.Status.RUNNING):
        raise StateError(f"run #{exp.pk} is {exp.get_status_display().lower()}; only queued or running runs resume")
    _enqueue_shards(exp.shards.filter(status__in=[Shard.Status.QUEUED, Shard.Status.RUNNING])
                    .values_list("pk", flat=True))
    return exp


def shards_requeue_running(ids: Iterable[int], why: str) -> list[int]:
    """Put running shards back in the queue: status queued (progress stops counting them as
    running), a new task each. The status test makes a second sweep of the same shards a no-op."""
    requeued = []
    with transaction.atomic():
        for pk in ids:
            if Shard.objects.filter(pk=pk, status=Shard.Status.RUNNING).update(status=Shard.Status.QUEUED, worker=""):
                requeued.append(pk)
        if requeued:
            logger.info("requeueing shards %s: %s", requeued, why)
            _enqueue_shards(requeued)
    return requeued


def _running_shards():
    return Shard.objects.filter(status=Shard.Status.RUNNING,
                                experiment__status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING])


def shards_requeue_for_worker(*, hostname: str, held_before: datetime) -> int:
    """Requeue the running shards a worker called ``hostname`` held before it restarted.

    Called when a worker starts: every shard still marked as running there with a heartbeat
    older than the start (``held_before``) was orphaned by its previous process (a crash or
    a killed site).
    """
    ids = list(_running_shards().filter(worker=hostname, heartbeat_at__lt=held_before).values_list("pk", flat=True))
    return len(shards_requeue_running(ids, f"worker {hostname} restarted"))


def shards_requeue_stale(*, live: Mapping[str, Any], stale_after: float) -> list[int]:
    """Requeue running shards whose worker is gone: the heartbeat is older than ``stale_after``
    seconds and the worker named on the shard is not among ``live`` (hostname -> an object
    with ``runs(task_name, argument)``), or is alive but no longer executing the shard (its
    task failed on a lost database connection, say). Returns the shards requeued.

    A shard wrongly taken for orphaned is merely computed twice: shards are idempotent.
    """
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    orphaned = []
    for pk, worker in _running_shards().filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)) \
            .values_list("pk", "worker"):
        alive = live.get(worker)
        if alive is None or not alive.runs("experiments.tasks.run_shard", pk):
            orphaned.append(pk)
    return shards_requeue_running(orphaned, f"their worker stopped (no heartbeat for {stale_after:.0f} s)")


def experiment_delete(*, experiment: Experiment) -> None:
    if not experiment.is_finished and experiment.status != Experiment.Status.SCHEDULED:
        experiment_cancel(experiment=experiment)
    experiment.delete()
