"""Database rows of the experiments app: runs, their shards, and one record per (image, method, class).

A run (:class:`Experiment`) is one model × one data set (or a subset) × methods × protocols.
It is split into :class:`Shard` rows (contiguous ranges of images) that any worker can take.
Each (image, method) unit writes its :class:`Record` rows in one transaction, and a unique
constraint on the record key makes a re-executed shard harmless: a shard skips the units
that already have records, and a concurrent duplicate cannot insert twice.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ExperimentQuerySet(models.QuerySet):
    def owned_by(self, user) -> "ExperimentQuerySet":
        return self.filter(owner=user)

    def active(self) -> "ExperimentQuerySet":
        return self.filter(status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING])


class Experiment(models.Model):
    """One benchmark run and everything needed to reproduce and read it.

    ``model_snapshot``: name, architecture and weights checksum at submission (the model row
    may be renamed or deleted later). ``dataset``: the request (kind, paths, subset);
    ``dataset_info``: what was read (name, version, root, selection, image keys).
    ``methods``: ``[{slot, key, label, enhance, params, enhance_params, baseline}]``.
    ``protocols``: ``Protocol.to_dict()`` of each protocol, frozen. ``manifest``: what the
    workers used (library versions, devices, resolved method parameters and layers).
    ``results``: the aggregate table per protocol. ``preset``: the preset it reproduces, if any
    (its published numbers are then compared with the table).
    """

    class Status(models.TextChoices):
        PREPARING = "preparing", "Preparing"      # its data set is being built on a worker
        SCHEDULED = "scheduled", "Scheduled"      # waits for a start time or for the current runs
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=200)
    model = models.ForeignKey("explain.ClassifierModel", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="experiments")
    model_snapshot = models.JSONField(default=dict, blank=True)
    dataset = models.JSONField(default=dict, blank=True)
    dataset_info = models.JSONField(default=dict, blank=True)
    methods = models.JSONField(default=list, blank=True)
    protocols = models.JSONField(default=list, blank=True)
    seed = models.IntegerField(default=0)
    shard_size = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    scheduled_for = models.DateTimeField(null=True, blank=True, help_text="start no earlier than this")
    after_current = models.BooleanField(default=False, help_text="start once the owner's current runs have finished")
    num_images = models.PositiveIntegerField(default=0)
    units_total = models.PositiveIntegerField(default=0, help_text="images × methods")
    estimated_seconds = models.FloatField(null=True, blank=True)
    estimate_basis = models.JSONField(default=dict, blank=True, help_text="per-image seconds per (method, protocol)")
    manifest = models.JSONField(default=dict, blank=True)
    results = models.JSONField(default=dict, blank=True)
    preset = models.CharField(max_length=100, blank=True, default="",
                              help_text="key of the preset the run reproduces (experiments.core.presets), or empty")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    prepare_sent_at = models.DateTimeField(null=True, blank=True,
                                           help_text="when the message that builds its data set was last sent")

    objects = ExperimentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "status"])]

    def __str__(self) -> str:
        return f"{self.name} #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def actual_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def method_label(self, slot: int) -> str:
        entry = self.methods[slot]
        return entry["label"] + (" + enhancement" if entry.get("enhance") else "")

    def mark_failed(self, message: str) -> None:
        self.status = self.Status.FAILED
        self.error = message[:4000]
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "error", "finished_at"])


class Shard(models.Model):
    """Images ``start … stop − 1`` (of the run's subset) for every method and protocol.

    Progress lives here, throttled: ``units_done`` counts (image, method) units with records,
    ``units_computed`` and ``busy_seconds`` those this run computed (for the ETA).
    ``worker`` is the Celery hostname that last took the shard, so a restarted worker can
    requeue the shards its previous incarnation held.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="shards")
    index = models.PositiveIntegerField()
    start = models.PositiveIntegerField()
    stop = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    units_done = models.PositiveIntegerField(default=0)
    units_computed = models.PositiveIntegerField(default=0)
    busy_seconds = models.FloatField(default=0.0)
    manifest = models.JSONField(default=dict, blank=True, help_text="device, versions, resolved method parameters")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["experiment_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "index"], name="unique_shard_index"),
            models.CheckConstraint(condition=models.Q(stop__gt=models.F("start")), name="shard_not_empty"),
        ]

    def __str__(self) -> str:
        return f"shard {self.index} [{self.start}, {self.stop}) of run #{self.experiment_id} ({self.status})"


class Record(models.Model):
    """The result of one protocol for one (image, method, class).

    ``variant`` separates records that share the class (perturbation's "predicted" and
    "target" modes). A failed unit is stored with ``ok = False``, ``class_id = −1`` and the
    error, so the run goes on and the failure is visible. ``data`` is the metric record's
    ``to_dict()``; ``thumb`` the map as a ``THUMB × THUMB`` uint8 array (min–max scaled) for
    the per-image drill-down.
    """

    THUMB = 64

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="records")
    image_index = models.PositiveIntegerField()
    image_key = models.CharField(max_length=300)
    method_slot = models.PositiveSmallIntegerField()
    method_key = models.CharField(max_length=60)
    enhance = models.BooleanField(default=False)
    protocol = models.CharField(max_length=100)
    class_id = models.IntegerField()
    variant = models.CharField(max_length=20, blank=True, default="")
    ok = models.BooleanField(default=True)
    data = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    thumb = models.BinaryField(null=True, blank=True)
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment_id", "image_index", "method_slot", "protocol", "class_id", "variant"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "image_index", "method_slot", "protocol", "class_id", "variant"],
                name="unique_experiment_record",
            ),
        ]
        indexes = [
            models.Index(fields=["experiment", "method_slot", "protocol"]),
            models.Index(fields=["method_key", "enhance", "protocol"]),
        ]

    def __str__(self) -> str:
        return f"run #{self.experiment_id} image {self.image_index} {self.method_key} {self.protocol} class {self.class_id}"
