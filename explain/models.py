"""Database rows of the explain app: classifiers, method settings, images, explanation sets and jobs."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class ClassifierModelQuerySet(models.QuerySet):
    def visible_to(self, user) -> "ClassifierModelQuerySet":
        """Built-ins for everyone, plus the user's own uploads."""
        if user is None or not user.is_authenticated:
            return self.filter(owner__isnull=True)
        return self.filter(models.Q(owner__isnull=True) | models.Q(owner=user))


def _weights_path(instance: "ClassifierModel", filename: str) -> str:
    return f"weights/user-{instance.owner_id}/{uuid.uuid4().hex}.safetensors"


class ClassifierModel(models.Model):
    """A classifier: a built-in (``owner`` is null, weights from the zoo) or a user's upload.

    ``layers`` lists the sub-modules an explainer may hook (input to output) and
    ``default_layers`` the layer per role ("cam", "tokens"); both are recorded when the row is
    created so that forms need not build the network. ``preprocessing`` holds mean, std,
    input_size and resize_size.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="classifier_models")
    name = models.CharField(max_length=100)
    builtin_key = models.CharField(max_length=50, blank=True, help_text="zoo name of a built-in model")
    architecture = models.CharField(max_length=100, help_text="torchvision or timm architecture name")
    family = models.CharField(max_length=10, choices=[("cnn", "CNN"), ("vit", "ViT")])
    num_classes = models.PositiveIntegerField(default=1000)
    class_names = models.JSONField(default=list, blank=True)
    weights_file = models.FileField(upload_to=_weights_path, blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True)
    weights_present = models.BooleanField(default=False)
    layers = models.JSONField(default=list, blank=True)
    default_layers = models.JSONField(default=dict, blank=True)
    preprocessing = models.JSONField(default=dict, blank=True)
    # Method key -> why that method cannot explain this architecture ("" where it can), from the
    # engine (``explain.core.method_support``), recorded with the layers so listings build no net.
    method_support = models.JSONField(default=dict, blank=True)
    # A built-in's last weights download: status (queued, running, done, failed), progress,
    # message, url, sha256 and how the file was checked (``services.builtin_weights_fetch``).
    weights_fetch = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ClassifierModelQuerySet.as_manager()

    class Meta:
        ordering = ["owner_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["builtin_key"], condition=models.Q(owner__isnull=True),
                                    name="unique_builtin_key"),
            models.UniqueConstraint(fields=["owner", "name"], name="unique_model_name_per_owner"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_builtin(self) -> bool:
        return self.owner_id is None

    @property
    def weights_fetch_status(self) -> str:
        return (self.weights_fetch or {}).get("status", "")


class MethodSetting(models.Model):
    """A user's saved parameters for one method on one model (applied whenever they run it)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="method_settings")
    model = models.ForeignKey(ClassifierModel, on_delete=models.CASCADE, related_name="method_settings")
    method_key = models.CharField(max_length=50)
    params = models.JSONField(default=dict, blank=True)
    enhance_params = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_id", "method_key"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "model", "method_key"], name="unique_method_setting"),
        ]


def _image_path(instance: "InputImage", filename: str) -> str:
    return f"images/user-{instance.owner_id}/{uuid.uuid4().hex}.png"


def _display_path(instance: "InputImage", filename: str) -> str:
    return f"images/user-{instance.owner_id}/{uuid.uuid4().hex}-display.jpg"


class InputImage(models.Model):
    """An uploaded (or sample) photo, kept as PNG, plus a JPEG at most ``DISPLAY_MAX`` pixels on a side."""

    DISPLAY_MAX = 512

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="input_images")
    name = models.CharField(max_length=200)
    file = models.FileField(upload_to=_image_path)
    display_file = models.FileField(upload_to=_display_path)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    display_width = models.PositiveIntegerField()
    display_height = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class ExplanationSet(models.Model):
    """One image on one model: the prediction, and the maps of the methods run on it."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="explanation_sets")
    model = models.ForeignKey(ClassifierModel, on_delete=models.CASCADE, related_name="explanation_sets")
    image = models.ForeignKey(InputImage, on_delete=models.CASCADE, related_name="explanation_sets")
    predictions = models.JSONField(default=list, blank=True, help_text="top-5: [{index, name, probability}]")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.image} on {self.model}"


class JobQuerySet(models.QuerySet):
    def owned_by(self, user) -> "JobQuerySet":
        return self.filter(explanation_set__owner=user)


class Job(models.Model):
    """A unit of GPU work: the prediction of a set, or one method's map for one class.

    Progress lives here (not in a result backend) so pages and the API read it from the
    database and it survives a worker restart.
    """

    class Kind(models.TextChoices):
        PREDICT = "predict", "Prediction"
        EXPLAIN = "explain", "Saliency map"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    explanation_set = models.ForeignKey(ExplanationSet, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    method_key = models.CharField(max_length=50, blank=True)
    target = models.IntegerField(null=True, blank=True)
    enhance = models.BooleanField(default=False)
    params = models.JSONField(default=dict, blank=True, help_text="parameter overrides applied (saved settings)")
    enhance_params = models.JSONField(default=dict, blank=True)
    # What the map covers: the model's centre crop, or the whole image resized without a crop (CNNs).
    region = models.CharField(max_length=10, choices=[("crop", "Centre crop"), ("whole", "Whole image")],
                              default="crop")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    map_file = models.FileField(upload_to="maps/", blank=True, help_text="float32 map aligned with the display image")
    raw_file = models.FileField(upload_to="maps/", blank=True, help_text=".npy map on the model input (S×S)")
    map_max = models.FloatField(null=True, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Which worker runs it, since when, how often it was started: a job whose worker died is
    # found by the periodic sweep and retried, or failed with the reason after MAX_ATTEMPTS.
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    MAX_ATTEMPTS = 3

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__gte=0) & models.Q(progress__lte=1),
                                   name="job_progress_fraction"),
            models.CheckConstraint(condition=~models.Q(kind="explain") | ~models.Q(method_key=""),
                                   name="explain_job_has_method"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.method_key} #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    def mark_running(self, worker: str = "") -> None:
        self.status = self.Status.RUNNING
        self.started_at = self.heartbeat_at = timezone.now()
        self.progress = max(self.progress, 0.05)
        self.worker = worker[:200]
        self.attempts += 1
        self.save(update_fields=["status", "started_at", "heartbeat_at", "progress", "worker", "attempts"])

    def mark_progress(self, fraction: float) -> None:
        self.progress = min(1.0, max(0.0, float(fraction)))
        self.heartbeat_at = timezone.now()
        self.save(update_fields=["progress", "heartbeat_at"])

    def mark_failed(self, message: str) -> None:
        self.status = self.Status.FAILED
        self.error = message[:2000]
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "error", "finished_at"])
