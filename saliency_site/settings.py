"""Settings for the Saliency Workbench: one file, every value from the environment.

The defaults run on one machine with the embedded PostgreSQL and Redis that ``./run``
starts; ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch to external servers. A bad value
fails loudly at start-up rather than later.
"""
from __future__ import annotations

import json
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SALIENCY_DATA_DIR", BASE_DIR / "data")).resolve()


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def _embedded_services() -> dict:
    """The addresses ``./run`` wrote for the embedded servers it started, if any."""
    path = DATA_DIR / "run" / "services.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


_embedded = _embedded_services()

SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# The HTTPS profile: HTTPS=1 where the site is reached over TLS (directly or through a proxy).
# Cookies only travel encrypted, plain HTTP is redirected, and browsers are told to come back
# over HTTPS only (HSTS); `manage.py check --deploy` is clean under it. Behind a TLS-terminating
# proxy, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https" names the header the proxy sets
# (only set it when the proxy strips that header from clients' requests).
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS and env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = HTTPS and env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]      # probes inside the deployment speak plain HTTP
_proxy_header = os.environ.get("SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_header:
    try:
        _header, _value = (part.strip() for part in _proxy_header.split(":", 1))
    except ValueError:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={_proxy_header!r} must read 'Header-Name: value', "
            "e.g. 'X-Forwarded-Proto: https'") from None
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _header.upper().replace("-", "_"), _value)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",   # Swagger UI served from our static files: the docs work offline
    "accounts",
    "explain",
    "experiments",
    "frontend",
    "sharing",
    "axes",                      # failed logins counted per account and per address
    "csp",
]

MIDDLEWARE = [
    "saliency_site.middleware.RequestBodyLimits",   # first: refuses oversized or stalled bodies
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",   # turns a locked-out login into our answer
    "csp.middleware.CSPMiddleware",
]

# Only our own files may run or style a page: no inline script, style attribute or event handler.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # Scripts are the site's own files only; inline styles are still allowed, because the pages'
        # modules build some markup with style attributes (the next thing to tighten).
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

ROOT_URLCONF = "saliency_site.urls"
WSGI_APPLICATION = "saliency_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL") or _embedded.get("database_url")
if not DATABASE_URL:
    # Settings must import without a server (collectstatic, the explain CLI); connecting fails
    # with this hint instead.
    DATABASE_URL = "postgres://postgres@127.0.0.1:1/start-the-site-with-run-or-set-DATABASE_URL"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
if os.environ.get("SALIENCY_TEST_DATABASE"):
    # `./run test` names a test database per run, so that two runs on one server never collide.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["SALIENCY_TEST_DATABASE"]}
if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
    raise ImproperlyConfigured(f"DATABASE_URL must point to PostgreSQL, got engine {DATABASES['default']['ENGINE']}")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media")).resolve()
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Request bodies (saliency_site/middleware.py): forms and JSON at most 2 MB, images 20 MB, weights
# files MAX_WEIGHTS_UPLOAD_MB (a VGG19 state_dict is about 550 MB); a larger Content-Length is
# answered 413 before the body is read, and a body that stalls for REQUEST_BODY_READ_TIMEOUT
# seconds is cut off. Bodies above FILE_UPLOAD_MAX_MEMORY_SIZE spool to disk, not memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
MAX_IMAGE_UPLOAD_BYTES = env_int("MAX_IMAGE_UPLOAD_MB", 20) * 1024 * 1024
MAX_WEIGHTS_UPLOAD_BYTES = env_int("MAX_WEIGHTS_UPLOAD_MB", 1024) * 1024 * 1024
_MULTIPART_OVERHEAD = 1024 * 1024   # the form's other fields and part headers
REQUEST_BODY_LIMITS = [   # (method, path prefix, bytes): the first match wins
    ("POST", "/api/images/", MAX_IMAGE_UPLOAD_BYTES + _MULTIPART_OVERHEAD),
    ("POST", "/api/models/", MAX_WEIGHTS_UPLOAD_BYTES + _MULTIPART_OVERHEAD),
    ("POST", "/models/", MAX_WEIGHTS_UPLOAD_BYTES + _MULTIPART_OVERHEAD),      # the Models page's upload forms
]
REQUEST_BODY_READ_TIMEOUT = env_int("REQUEST_BODY_READ_TIMEOUT", 30)

# Weights imported by `manage.py import_weights`; read by explain.core.zoo through this variable.
WEIGHTS_DIR = Path(os.environ.get("SALIENCY_WEIGHTS_DIR", DATA_DIR / "weights")).resolve()
os.environ.setdefault("SALIENCY_WEIGHTS_DIR", str(WEIGHTS_DIR))
# `manage.py fetch_weights` and the Models page's fetch button download from this base URL instead
# of torchvision's and Hugging Face's servers, keeping the file names (README, "Weights: fetched, mirrored or imported").
WEIGHTS_MIRROR = os.environ.get("SALIENCY_WEIGHTS_MIRROR", "").strip()
if WEIGHTS_MIRROR and not WEIGHTS_MIRROR.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"SALIENCY_WEIGHTS_MIRROR must be an http(s) base URL, not {WEIGHTS_MIRROR!r}")

# Folders a user may name as a data set path (experiments); colon-separated.
DATA_ROOTS = [Path(p).resolve() for p in os.environ.get("SALIENCY_DATA_ROOTS", str(DATA_DIR / "datasets")).split(":") if p]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # Domain errors (ValueError subclasses) become clear 4xx answers here, in one place.
    "EXCEPTION_HANDLER": "saliency_site.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Saliency Workbench API",
    "DESCRIPTION": "Explain image classifiers with many saliency methods, and evaluate the maps.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `status` field; give each enum its own name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "explain.models.Job.Status",
        "ExperimentStatusEnum": "experiments.models.Experiment.Status",
        "ShardStatusEnum": "experiments.models.Shard.Status",
    },
}

# Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one account, or
# from one address, logins for it are refused for the cool-off, on the page and the API alike.
AUTHENTICATION_BACKENDS = [
    "accounts.backends.LoginThrottleBackend",   # django-axes' check, for logins with a request
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]   # either one locks: per account, per address
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.views.login_locked_out"
AXES_VERBOSE = False

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# Requests held until a job they follow changes (explain/job_events.py), at most this many per web
# process at once: each holds one of its WEB_THREADS threads (saliency_site/gunicorn_conf.py).
JOB_WAIT_SLOTS = env_int("JOB_WAIT_SLOTS", max(1, env_int("WEB_THREADS", 8) // 2))

# Celery: Redis broker; results live in PostgreSQL rows, not in a result backend.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or _embedded.get("broker_url") or "redis://127.0.0.1:6379/0"
REDIS_URL = os.environ.get("REDIS_URL") or CELERY_BROKER_URL
# Work by kind: `interactive` (a prediction or a map someone is waiting for), `batch` (experiment
# shards), `default` (light bookkeeping: scheduled starts, the sweeps). Workers name the queues
# they serve, in order of preference (see queue_order_strategy below); /healthz wants each served.
CELERY_TASK_DEFAULT_QUEUE = "default"
WORK_QUEUES = ("interactive", "batch", "default")
CELERY_TASK_ROUTES = {
    "explain.tasks.run_job": {"queue": "interactive"},
    "explain.tasks.run_jobs": {"queue": "interactive"},
    "experiments.tasks.run_shard": {"queue": "batch"},
}
CELERY_TASK_ACKS_LATE = True                 # a task a dead worker held goes back to the queue
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1        # long GPU tasks: take one at a time
# An unacknowledged task of a worker that vanished without a word (SIGKILL, power loss) is
# delivered again after this long; the sweep below usually requeues its work much sooner.
# "priority": a worker polls its queues in the order of its --queues (not round robin), so a
# worker serving `interactive,batch` always takes a waiting map before the next shard.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
                                   "queue_order_strategy": "priority"}
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True        # a restarted Redis is found again, however long it took
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Celery beat (its own process under ./run, its own service under compose) sweeps for work whose
# worker is gone: shards and jobs marked running on a worker that no longer answers go back to
# the queue. The sweeps are light and go to `default`; one that could not run in time expires.
SWEEP_EVERY_SECONDS = env_int("SALIENCY_SWEEP_SECONDS", 15)
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-shards": {"task": "experiments.tasks.requeue_stale_shards", "schedule": SWEEP_EVERY_SECONDS,
                             "options": {"expires": SWEEP_EVERY_SECONDS}},
    "requeue-stale-jobs": {"task": "explain.tasks.requeue_stale_jobs", "schedule": SWEEP_EVERY_SECONDS,
                           "options": {"expires": SWEEP_EVERY_SECONDS}},
    "resend-lost-preparations": {"task": "experiments.tasks.resend_lost_preparations",
                                 "schedule": SWEEP_EVERY_SECONDS, "options": {"expires": SWEEP_EVERY_SECONDS}},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Each worker process loads this many built-in models (those with weights, by name: the one the
# Explain page opens on first) as it starts, so the first map of the day does not pay the load.
WARM_MODELS = env_int("SALIENCY_WARM_MODELS", 1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
