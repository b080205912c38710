"""The Celery application. Queues (settings): ``interactive`` (predictions, maps), ``batch`` (experiment shards), ``default``."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "saliency_site.settings")

app = Celery("saliency_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
