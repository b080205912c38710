"""Where a queued job stands on the ``interactive`` queue, and when its result is expected.

Read-only, and cheap enough for every poll: a :class:`QueueSnapshot` answers for any number of
jobs with three queries (the queued jobs, the running ones, the recent runtimes of the kinds of
work among them), however many jobs a page lists, and with none when none of them waits.

- ``queue_position``: 1 for the job that starts next, counting the queued jobs of every user
  created before it (the queue is first in, first out: Celery takes them in the order they were
  sent, which is the order they were created, requeued jobs aside);
- ``estimate_s``: seconds until the job's result is expected: what is left of the running jobs,
  plus the expected runtime of every queued job ahead of it, plus its own. A kind of work (model,
  method, enhanced or not) costs the median wall time of its last ``RECENT`` finished jobs on
  this site (start to finish on the worker, so loading and storing count too), or a prior until
  there are some. It assumes one worker takes the queue; with more it errs on the long side.
"""
from __future__ import annotations

import statistics

from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from .models import Job

#: Finished jobs per kind of work whose median is its expected runtime.
RECENT = 20

#: A prediction before one has been measured here: loading the model and one pass (seconds).
PREDICTION_PRIOR_SECONDS = 1.0

Kind = tuple[int, str, str, bool]  # (model id, job kind, method key, enhanced)


def _kind(model_id: int, kind: str, method_key: str, enhance: bool) -> Kind:
    return (model_id, kind, method_key or "", bool(enhance))


def prior_seconds(kind: str, method_key: str, enhance: bool) -> float | None:
    """The expected runtime of a job no job of its kind has measured yet (``None``: not known).

    A map costs the evaluation's per-image prior of its method (seconds on one CPU core),
    times the enhancement's number of explainer runs when enhanced.
    """
    if kind == Job.Kind.PREDICT:
        return PREDICTION_PRIOR_SECONDS
    # Function-local: experiments' services import this app's services, which import this module.
    from experiments.services.estimates import ENHANCE_FACTOR, METHOD_PRIOR_SECONDS

    seconds = METHOD_PRIOR_SECONDS.get(method_key)
    if seconds is None:
        return None
    return seconds * (ENHANCE_FACTOR if enhance else 1)


class QueueSnapshot:
    """The interactive queue as read at one moment: ``position`` and ``estimate`` for any job.

    Lazy: nothing is read until a queued or running job is asked about, so a page of finished
    jobs costs no query; then three queries answer for every job asked afterwards.
    """

    def __init__(self) -> None:
        self._loaded = False
        self.queued: list[tuple[int, Kind]] = []      # (job id, kind), in queue order
        self.running: list[tuple[float, Kind]] = []   # (seconds since its start, kind)
        self.costs: dict[Kind, float] = {}            # measured median seconds per kind
        self._index: dict[int, int] = {}
        self._ahead: list[float] = []                 # expected seconds before queue entry i starts
        self._total = 0.0                             # expected seconds until the queue is empty
        self._now = None
        self._kinds: set[Kind] = set()

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        self._now = now = timezone.now()
        fields = ("explanation_set__model_id", "kind", "method_key", "enhance")
        self.queued = [(pk, _kind(*rest)) for pk, *rest in
                       Job.objects.filter(status=Job.Status.QUEUED).order_by("created_at", "id")
                       .values_list("pk", *fields)]
        self.running = [((now - started).total_seconds() if started else 0.0, _kind(*rest))
                        for started, *rest in
                        Job.objects.filter(status=Job.Status.RUNNING).values_list("started_at", *fields)]
        self._kinds = {k for _, k in self.queued} | {k for _, k in self.running}
        self.costs = _measured_costs(self._kinds)
        self._index = {pk: i for i, (pk, _) in enumerate(self.queued)}
        total = sum(max(0.0, (self.cost(kind) or 0.0) - elapsed) for elapsed, kind in self.running)
        for _, kind in self.queued:
            self._ahead.append(total)
            total += self.cost(kind) or 0.0
        self._total = total

    def cost(self, kind: Kind) -> float | None:
        """Expected seconds of one job of this kind: measured here, or the prior."""
        measured = self.costs.get(kind)
        return measured if measured is not None else prior_seconds(kind[1], kind[2], kind[3])

    def position(self, job: Job) -> int | None:
        """1 for the next job to start; ``None`` when ``job`` is not waiting."""
        if job.status != Job.Status.QUEUED:
            return None
        self._load()
        index = self._index.get(job.pk)
        # queued after the snapshot was read: behind everything in it
        return len(self.queued) + 1 if index is None else index + 1

    def estimate(self, job: Job) -> float | None:
        """Seconds from now until ``job``'s result is expected; ``None`` when finished or unknown."""
        if job.status not in (Job.Status.QUEUED, Job.Status.RUNNING):
            return None
        self._load()
        kind = _kind(job.explanation_set.model_id, job.kind, job.method_key, job.enhance)
        if kind not in self._kinds:  # a job that changed state between its own read and the queue's
            self._kinds.add(kind)
            self.costs.update(_measured_costs({kind}))
        own = self.cost(kind)
        if own is None:
            return None
        if job.status == Job.Status.RUNNING:
            elapsed = (self._now - job.started_at).total_seconds() if job.started_at else 0.0
            return round(max(0.0, own - elapsed), 1)
        index = self._index.get(job.pk)
        ahead = self._total if index is None else self._ahead[index]
        return round(ahead + own, 1)


def _measured_costs(kinds: set[Kind]) -> dict[Kind, float]:
    """Median wall seconds of the last ``RECENT`` finished jobs of each kind (one query)."""
    if not kinds:
        return {}
    wanted = Q()
    for model, kind, method, enhance in kinds:
        wanted |= Q(explanation_set__model_id=model, kind=kind, method_key=method, enhance=enhance)
    recent = (Job.objects.filter(wanted, status=Job.Status.DONE, started_at__isnull=False, finished_at__isnull=False)
              .annotate(rank=Window(RowNumber(), partition_by=[F("explanation_set__model_id"), F("kind"),
                                                               F("method_key"), F("enhance")],
                                    order_by=F("finished_at").desc()),
                        wall=F("finished_at") - F("started_at"))
              .filter(rank__lte=RECENT)
              .values_list("explanation_set__model_id", "kind", "method_key", "enhance", "wall"))
    seconds: dict[Kind, list[float]] = {}
    for model, kind, method, enhance, wall in recent:
        seconds.setdefault(_kind(model, kind, method, enhance), []).append(wall.total_seconds())
    return {kind: statistics.median(values) for kind, values in seconds.items()}
