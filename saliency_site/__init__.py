import explain  # noqa: F401  first: it sets PyTorch's CPU allocator up before any tensor exists

from .celery import app as celery_app

__all__ = ("celery_app",)
