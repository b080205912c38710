"""Registers the explain app's explanation sets with the sharing app (two views of one set)."""
from __future__ import annotations

from sharing.registry import register_view


def _files(explanation_set, share, name: str):
    from explain.models import Job

    if name == "image":
        return explanation_set.image.display_file, "image/jpeg", None
    kind, _, job_id = name.partition("-")
    if kind not in ("map", "raw") or not job_id.isdigit():
        return None
    job = explanation_set.jobs.filter(pk=int(job_id), kind=Job.Kind.EXPLAIN, status=Job.Status.DONE).first()
    wanted = share.options.get("jobs")
    if job is None or (wanted and job.pk not in wanted):
        return None
    if kind == "map":
        return job.map_file, "application/octet-stream", None
    return job.raw_file, "application/octet-stream", f"{job.method_key}-class{job.target}.npy"


def _percentage(raw: dict, name: str) -> float:
    value = raw[name]
    # bool is an int to Python, and float() would take "50" or fail with a TypeError on {} or [1]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"options.{name} must be a number")
    return float(value)


def _options(raw: dict) -> dict:
    out = {}
    if "jobs" in raw:
        jobs = raw["jobs"]
        if not isinstance(jobs, list) or not all(isinstance(j, int) and not isinstance(j, bool) for j in jobs):
            raise ValueError("options.jobs must be a list of job ids")
        out["jobs"] = jobs
    if "ratio" in raw:
        ratio = _percentage(raw, "ratio")
        if not 0 < ratio <= 100:
            raise ValueError("options.ratio must be a percentage in (0, 100]")
        out["ratio"] = ratio
    if "opacity" in raw:
        opacity = _percentage(raw, "opacity")
        if not 0 <= opacity <= 100:
            raise ValueError("options.opacity must be in [0, 100]")
        out["opacity"] = opacity
    if "colormap" in raw:
        if not isinstance(raw["colormap"], str) or raw["colormap"] not in ("jet", "viridis", "inferno", "gray"):
            raise ValueError("options.colormap must be one of jet, viridis, inferno, gray")
        out["colormap"] = raw["colormap"]
    return out


def register() -> None:
    from explain.models import ExplanationSet

    from .views import shared_context

    for view in ("explanation", "segmentation"):
        register_view(
            view, ExplanationSet, template="frontend/shared.html", context=shared_context,
            owner_of=lambda obj: obj.owner_id, files=_files, options=_options,
            title=lambda obj: f"{obj.image.name} on {obj.model.name}",
        )
