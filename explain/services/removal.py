"""Deletion that reaches files: rows go in the transaction, their files once it commits."""
from __future__ import annotations

from pathlib import Path

from django.db import transaction

from ..models import ExplanationSet


def delete_files_on_commit(fields) -> None:
    """Unlink the files of ``fields`` (``FieldFile``s, empty ones skipped) once the transaction
    commits: a rolled-back deletion keeps its files."""
    paths = [Path(f.path) for f in fields if f]
    transaction.on_commit(lambda: [p.unlink(missing_ok=True) for p in paths])


@transaction.atomic
def explanation_set_delete(*, explanation_set: ExplanationSet) -> None:
    """Delete a set, its jobs and their map files."""
    delete_files_on_commit([f for job in explanation_set.jobs.all() for f in (job.map_file, job.raw_file)])
    explanation_set.delete()
