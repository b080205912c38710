"""Writes and side effects of the explain app, one module per sub-domain; the public names are here.

- :mod:`.classifiers`: the built-in models and their weights, users' uploads, loading and warming;
- :mod:`.method_settings`: saved method parameters;
- :mod:`.images`: uploads and the sample photographs;
- :mod:`.jobs`: explanation sets and their jobs, queued, run on a worker, requeued;
- :mod:`.removal`: deletion that reaches files (after the commit).

Every function is keyword-only and named ``<entity>_<action>``. Domain errors are ``ValueError``
subclasses (the core's ``WeightsMissing``, ``WeightsInvalid``, ``ImageError``, parameter
validation, and the project's ``InputError``/``NotAvailable``); the API maps them to 4xx in one place.
"""
from .classifiers import (FETCH_STALE_SECONDS, MAX_CLASS_NAMES_BYTES, builtin_models_sync, builtin_weights_fetch,
                          builtin_weights_fetch_request, builtin_weights_import, class_names_read, classifier_load,
                          classifier_model_delete, classifier_model_layers_ensure, classifier_model_rename,
                          classifier_model_upload, classifiers_warm)
from .images import SAMPLES, image_create, image_delete
from .jobs import explanation_jobs_create, explanation_set_create, job_run, jobs_requeue_stale, jobs_run
from .method_settings import (enhance_params_validate, method_params_validate, method_setting_reset,
                              method_setting_save)
from .removal import explanation_set_delete

__all__ = [
    "FETCH_STALE_SECONDS", "MAX_CLASS_NAMES_BYTES", "SAMPLES",
    "builtin_models_sync", "builtin_weights_fetch", "builtin_weights_fetch_request", "builtin_weights_import",
    "class_names_read", "classifier_load", "classifier_model_delete", "classifier_model_layers_ensure",
    "classifier_model_rename", "classifier_model_upload", "classifiers_warm",
    "image_create", "image_delete",
    "explanation_jobs_create", "explanation_set_create", "explanation_set_delete",
    "job_run", "jobs_requeue_stale", "jobs_run",
    "enhance_params_validate", "method_params_validate", "method_setting_reset", "method_setting_save",
]
