"""Writes and side effects of the experiments app: submit, schedule, run shards, cancel, aggregate.

One module per sub-domain; the public names are re-exported here, so callers write
``services.experiment_create(...)``. Every public function is keyword-only and named
``<entity>_<action>``. Domain errors are the project's (``saliency_site.errors``: ``InputError``,
``NotAvailable``, ``StateError``) or the core's ``ValueError`` subclasses (``PathNotAllowed``,
``DatasetFormatError``, parameter validation); the API maps them to 4xx in one place.

- :mod:`.datasets`: the data-set formats and opening a set;
- :mod:`.methods`: method slots and the baselines;
- :mod:`.protocols`: protocols read and checked against data set and model;
- :mod:`.estimates`: the run's estimate from measured costs;
- :mod:`.runs`: plan (validate and estimate without storing), create, schedule, start, cancel, resume, delete;
- :mod:`.evaluation`: one (image, method) unit's records;
- :mod:`.shards`: running a shard, closing the run;
- :mod:`.aggregation`: the tables and curves;
- :mod:`.presets`: presets available here, and queueing one.

How a run survives crashes: the run is split into shards (ranges of images) queued with late
acknowledgement, so a shard whose worker dies is delivered again. A shard writes the records
of one (image, method) unit in one transaction and skips the units that already have records;
the unique constraint on the record key turns a duplicate execution into a no-op. A worker that
restarts under the same name requeues the shards its previous incarnation held
(``shards_requeue_for_worker``), so a restarted site resumes at once rather than after the
broker's visibility timeout; a periodic sweep (Celery beat) requeues the shards of a worker that
is gone for good (``shards_requeue_stale``). A shard whose task fails on a lost database or
broker connection is retried by Celery.
"""
from saliency_site.errors import InputError, NotAvailable, StateError

from .aggregation import experiment_aggregate, run_manifest
from .datasets import (
    DATASET_KINDS,
    MAX_IMAGES,
    DatasetKind,
    dataset_expected,
    dataset_needs_build,
    dataset_open,
    dataset_spec,
)
from .estimates import experiment_estimate
from .evaluation import Evaluator
from .methods import BASELINES, baseline_map, method_entries
from .presets import preset_availability, preset_run, presets_list
from .protocols import check_protocol_fits, protocol_read
from .runs import (
    SHARD_TARGET_SECONDS,
    RunPlan,
    experiment_cancel,
    experiment_create,
    experiment_delete,
    experiment_plan,
    experiment_prepare,
    experiments_prepare_resend,
    experiment_resume,
    experiment_start,
    experiment_submit,
    experiments_release,
    shards_requeue_for_worker,
    shards_requeue_running,
    shards_requeue_stale,
)
from .shards import PROGRESS_EVERY_SECONDS, experiment_complete_if_done, experiment_run_sync, shard_run

__all__ = [
    "BASELINES", "DATASET_KINDS", "MAX_IMAGES", "PROGRESS_EVERY_SECONDS", "SHARD_TARGET_SECONDS",
    "DatasetKind", "Evaluator", "InputError", "NotAvailable", "RunPlan", "StateError",
    "baseline_map", "check_protocol_fits", "dataset_expected", "dataset_needs_build", "dataset_open", "dataset_spec", "experiment_aggregate",
    "experiment_cancel", "experiment_complete_if_done", "experiment_create", "experiment_delete",
    "experiment_estimate", "experiment_plan", "experiment_prepare", "experiments_prepare_resend", "experiment_resume", "experiment_run_sync", "experiment_start",
    "experiment_submit", "experiments_release", "method_entries", "preset_availability", "preset_run", "presets_list",
    "protocol_read", "run_manifest",
    "shard_run", "shards_requeue_for_worker", "shards_requeue_running", "shards_requeue_stale",
]
