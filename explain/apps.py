from django.apps import AppConfig
from django.db.models.signals import post_save

from . import job_events


def _announce_job(sender, instance, update_fields=None, **kwargs) -> None:
    started = instance.status == instance.Status.RUNNING and (update_fields is None or "status" in update_fields)
    job_events.announce([instance.pk], started=started)


class ExplainConfig(AppConfig):
    name = "explain"

    def ready(self) -> None:
        # Every save of a job wakes the requests waiting on it (explain/job_events.py); the
        # queryset updates that bypass save() announce themselves in services.
        post_save.connect(_announce_job, sender="explain.Job", dispatch_uid="explain.announce_job")
