from explain import cpu_memory

# First, before any tensor exists: the site, its workers and manage.py share these allocator settings.
cpu_memory.apply()

from .celery import app as celery_app  # noqa: E402 - after the allocator settings

__all__ = ("celery_app",)
