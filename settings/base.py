"""Settings shared by every environment. Environment-specific modules import * from here."""

from __future__ import annotations

from pathlib import Path

from settings import env
from settings.log_config import build_logging

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.text("TASKPLANE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = False
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "health_check",
    "apps.core",
    "apps.outbox",
    "apps.idempotency",
    "apps.flags",
    "apps.orders",
    "apps.sagas",
    "apps.schedules",
    "apps.emails",
    "apps.notifications",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.middleware.ApiProblemMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.flags.context.FlagContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last: it runs the view itself from process_view, after every other middleware's process_view.
    "apps.idempotency.middleware.IdempotencyMiddleware",
]

ROOT_URLCONF = "settings.urls"
WSGI_APPLICATION = "settings.wsgi.application"
# `manage.py test` runs the pytest suite (Django's own discovery finds none of it and would report "OK").
TEST_RUNNER = "settings.pytest_runner.PytestRunner"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- API -------------------------------------------------------------------------------------
API_THROTTLE_RATE = env.rate("API_THROTTLE_RATE", "600/min")
API_ANON_THROTTLE_RATE = env.rate("API_ANON_THROTTLE_RATE", "60/min")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.core.api_auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["apps.core.throttling.PrincipalRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"principal": API_THROTTLE_RATE, "anonymous": API_ANON_THROTTLE_RATE},
    "DEFAULT_PARSER_CLASSES": ["apps.core.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.core.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # How many proxies in front of the web append to X-Forwarded-For; 0 trusts only REMOTE_ADDR,
    # so a client cannot choose its own anonymous throttle bucket.
    "NUM_PROXIES": env.integer("NUM_PROXIES", 0, minimum=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Taskplane API",
    "DESCRIPTION": (
        "Control-plane API of Taskplane. Authenticate with `Authorization: Bearer <api key>` "
        "(create keys with `manage.py create_api_key`). Every error is RFC 9457 "
        "`application/problem+json`."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Several models have a `kind`/`status`; name their enums so the schema never merges them.
    "ENUM_NAME_OVERRIDES": {
        "FlagKindEnum": "apps.flags.models.Flag.Kind",
        "FlagRuleKindEnum": "apps.flags.models.FlagRule.Kind",
        "OutboxKindEnum": "apps.outbox.models.OutboxMessage.Kind",
        "OutboxStatusEnum": "apps.outbox.models.OutboxMessage.Status",
        "OutboxRelayStateEnum": "apps.outbox.selectors.RELAY_STATES",
        "SagaStateEnum": "apps.sagas.models.SagaInstance.State",
        "SagaAttemptKindEnum": "apps.sagas.models.SagaStepAttempt.Kind",
        "SagaAttemptStateEnum": "apps.sagas.models.SagaStepAttempt.State",
    },
    # Swagger UI is served from this deployment (drf-spectacular-sidecar), not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.openapi.add_problem_responses",
        "apps.idempotency.openapi.document_idempotency",
    ],
}

# --- Observability ---------------------------------------------------------------------------
LOG_LEVEL = env.text("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env.text("LOG_FORMAT", "json")
LOGGING_CONFIG = "logging.config.dictConfig"
LOGGING = build_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)

OTEL_EXPORTER_OTLP_ENDPOINT = env.text("OTEL_EXPORTER_OTLP_ENDPOINT", "")
OTEL_SERVICE_NAME = env.text("OTEL_SERVICE_NAME", "taskplane")
# Tracing costs nothing when off: no instrumentation is installed unless an exporter is configured.
TRACING_ENABLED = env.boolean("TRACING_ENABLED", bool(OTEL_EXPORTER_OTLP_ENDPOINT))

# /metrics is open unless a token or allowed networks are configured (production requires one).
METRICS_TOKEN = env.text("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env.networks("METRICS_ALLOWED_NETWORKS", [])
METRICS_PUBLIC = True
# Set for multi-process servers (gunicorn workers, Celery prefork); prometheus_client reads it too.
PROMETHEUS_MULTIPROC_DIR = env.text("PROMETHEUS_MULTIPROC_DIR", "")
# A worker serves its own /metrics on this port when set (0 = off; `make run` aggregates into the web's).
WORKER_METRICS_PORT = env.integer("WORKER_METRICS_PORT", 0, minimum=0)
WORKER_METRICS_ADDR = env.text("WORKER_METRICS_ADDR", "0.0.0.0")  # noqa: S104 - scraped from other pods

# Keys for encrypting data at rest, newest first (MultiFernet). Production requires them.
FERNET_KEYS: list[str] = env.fernet_keys("FERNET_KEYS", [])

# --- Celery ----------------------------------------------------------------------------------
CELERY_TASK_SOFT_TIME_LIMIT = env.integer("CELERY_TASK_SOFT_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_TIME_LIMIT = env.integer("CELERY_TASK_TIME_LIMIT", 360, minimum=1)
# A Redis broker re-delivers unacknowledged messages after the visibility timeout; it must exceed
# the hard time limit or a long task that is still running would be handed to a second worker.
CELERY_VISIBILITY_TIMEOUT = env.integer("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A task that fails is never acknowledged away (issue 15 §2). The failure policy (workers/task.py)
# catches what a task raises and acks only after it wrote a retry or dead row, or requeues. What it
# cannot catch: the hard time limit kills the process, and with False here Celery requeues that
# message instead of acknowledging it (the soft limit, raised inside the task, is a normal failure).
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BROKER_POOL_LIMIT = 10
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# How often beat asks a worker to record the heartbeat shown in admin.
HEARTBEAT_SECONDS = env.integer("HEARTBEAT_SECONDS", 30, minimum=1)

# --- Outbox ----------------------------------------------------------------------------------
OUTBOX_EVENTS_EXCHANGE = env.text("OUTBOX_EVENTS_EXCHANGE", "taskplane.events")
OUTBOX_MAX_PAYLOAD_BYTES = env.integer("OUTBOX_MAX_PAYLOAD_BYTES", 256 * 1024, minimum=1)
OUTBOX_ALLOW_AUTOCOMMIT = env.boolean("OUTBOX_ALLOW_AUTOCOMMIT", False)
# The outbox's INSERT and lock statements run as server-side prepared statements (docs/outbox.md);
# turn off behind a transaction-pooling PgBouncer older than 1.21, which cannot route them.
OUTBOX_PREPARED_STATEMENTS = env.boolean("OUTBOX_PREPARED_STATEMENTS", True)
OUTBOX_ENCRYPTED_TOPICS = env.csv("OUTBOX_ENCRYPTED_TOPICS", [])
OUTBOX_BATCH_SIZE = env.integer("OUTBOX_BATCH_SIZE", 1000, minimum=1)
OUTBOX_MAX_ATTEMPTS = env.integer("OUTBOX_MAX_ATTEMPTS", 10, minimum=1)
OUTBOX_BACKOFF_BASE_SECONDS = float(env.integer("OUTBOX_BACKOFF_BASE_MS", 500, minimum=1)) / 1000
OUTBOX_BACKOFF_MAX_SECONDS = float(env.integer("OUTBOX_BACKOFF_MAX_SECONDS", 300, minimum=1))
OUTBOX_SUBSCRIBER_MAX_ATTEMPTS = env.integer("OUTBOX_SUBSCRIBER_MAX_ATTEMPTS", 8, minimum=1)
OUTBOX_RETENTION_DAYS = env.integer("OUTBOX_RETENTION_DAYS", 7, minimum=0)
# Task failure policy (workers/task.py): runs ending in an application error before a task is dead,
# and the longest wait before a message that hit an infrastructure error goes back to the broker.
TASK_MAX_ATTEMPTS = env.integer("TASK_MAX_ATTEMPTS", 8, minimum=1)
TASK_REQUEUE_DELAY_MAX_SECONDS = env.integer("TASK_REQUEUE_DELAY_MAX_SECONDS", 10, minimum=1)
# Inbox entries are what makes a redelivery a no-op, so they must outlive every way a handled
# message can come again: a retained row, a retry row's whole backoff horizon, a broker redelivery.
OUTBOX_INBOX_RETENTION_DAYS = env.integer("OUTBOX_INBOX_RETENTION_DAYS", 14, minimum=1)
_REDELIVERY_HORIZON_SECONDS = (
    OUTBOX_RETENTION_DAYS * 86400
    + max(TASK_MAX_ATTEMPTS, OUTBOX_SUBSCRIBER_MAX_ATTEMPTS) * OUTBOX_BACKOFF_MAX_SECONDS
    + CELERY_VISIBILITY_TIMEOUT
)
if OUTBOX_INBOX_RETENTION_DAYS * 86400 <= _REDELIVERY_HORIZON_SECONDS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"OUTBOX_INBOX_RETENTION_DAYS ({OUTBOX_INBOX_RETENTION_DAYS}) must exceed OUTBOX_RETENTION_DAYS plus the "
        f"longest retry horizon and the visibility timeout ({_REDELIVERY_HORIZON_SECONDS / 86400:.2f} days)."
    )
OUTBOX_RELAYS = env.integer("OUTBOX_RELAYS", 1, minimum=1)
OUTBOX_RELAY_LEASE_SECONDS = env.integer("OUTBOX_RELAY_LEASE_SECONDS", 20, minimum=1)
OUTBOX_RELAY_TICK_SECONDS = env.integer("OUTBOX_RELAY_TICK_SECONDS", 5, minimum=1)
# /health/ fails when messages have been due this long and no relay cycle succeeded for as long.
OUTBOX_RELAY_STALL_SECONDS = env.integer("OUTBOX_RELAY_STALL_SECONDS", 60, minimum=5)
# Fallback poll when a NOTIFY wake-up is lost (PostgreSQL), and the SQLite relay's poll interval.
OUTBOX_POLL_SECONDS = env.integer("OUTBOX_POLL_MS", 1000, minimum=10) / 1000
OUTBOX_SQLITE_POLL_SECONDS = 0.2

# --- Idempotency ------------------------------------------------------------------------------
# Regexes of paths whose unsafe methods require an Idempotency-Key (views can also require one).
IDEMPOTENCY_REQUIRED_PATHS = env.csv("IDEMPOTENCY_REQUIRED_PATHS", [])
IDEMPOTENCY_LEASE_SECONDS = env.integer("IDEMPOTENCY_LEASE_SECONDS", 60, minimum=1)
IDEMPOTENCY_RETENTION_SECONDS = env.integer("IDEMPOTENCY_RETENTION_SECONDS", 24 * 3600, minimum=60)
IDEMPOTENCY_WAIT_SECONDS = env.integer("IDEMPOTENCY_WAIT_MS", 0, minimum=0) / 1000
IDEMPOTENCY_MAX_RESPONSE_BYTES = env.integer("IDEMPOTENCY_MAX_RESPONSE_BYTES", 1024 * 1024, minimum=0)
IDEMPOTENCY_STORED_HEADERS = env.csv("IDEMPOTENCY_STORED_HEADERS", [])
IDEMPOTENCY_ENCRYPT_RESPONSES = env.boolean("IDEMPOTENCY_ENCRYPT_RESPONSES", False)

if (OUTBOX_ENCRYPTED_TOPICS or IDEMPOTENCY_ENCRYPT_RESPONSES) and not FERNET_KEYS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "FERNET_KEYS is required when OUTBOX_ENCRYPTED_TOPICS or IDEMPOTENCY_ENCRYPT_RESPONSES is set."
    )

# --- Feature flags ----------------------------------------------------------------------------
# How often each process re-checks the flags version when no change signal arrives (the fallback):
# one primary-key read on the listener's kept connection, often enough for the 1 s propagation target.
FLAGS_POLL_SECONDS = env.integer("FLAGS_POLL_MS", 500, minimum=50) / 1000
# Dotted path to `hook(request, user) -> dict` adding attributes (tenant, plan, …) to the context.
FLAGS_CONTEXT_HOOK = env.text("FLAGS_CONTEXT_HOOK", "")

# --- Sagas ------------------------------------------------------------------------------------
# docs/sagas.md, "Settings": the sweeper's period, the compensation budget, and when a scheduled step
# whose task never arrived is dispatched again.
SAGAS_SWEEP_SECONDS = env.integer("SAGAS_SWEEP_SECONDS", 5, minimum=1)
SAGAS_COMPENSATION_MAX_ATTEMPTS = env.integer("SAGAS_COMPENSATION_MAX_ATTEMPTS", 10, minimum=1)
SAGAS_STEP_LOST_SECONDS = env.integer("SAGAS_STEP_LOST_SECONDS", 60, minimum=1)

# --- Orders checkout and payments ----------------------------------------------------------
# docs/sagas.md, "The checkout saga". The payment provider the orders.checkout saga charges and refunds
# through. Unset: the sandbox provider this project's web process serves under /sandbox/payments/, so
# `make run` works with nothing configured (local.sh names the web's address in PAYMENTS_SANDBOX_URL:
# honcho gives each process its own PORT); production requires a real one.
PAYMENTS_URL = env.url("PAYMENTS_URL", "", schemes=("http", "https"))
PAYMENTS_SANDBOX = not PAYMENTS_URL
if PAYMENTS_SANDBOX:
    PAYMENTS_URL = env.url("PAYMENTS_SANDBOX_URL", "http://127.0.0.1:8000/sandbox/payments", schemes=("http",))
PAYMENTS_CURRENCY = env.text("PAYMENTS_CURRENCY", "EUR")
# Connect and read timeout of one call to the provider; a timeout is a transient failure (retried).
PAYMENTS_TIMEOUT_SECONDS = env.integer("PAYMENTS_TIMEOUT_MS", 5000, minimum=1) / 1000
# Charge attempts (transient failures: 5xx, 429, timeouts, an open breaker) before the order is
# cancelled with payment_failed, and the first retry's backoff (full jitter, doubling, capped at 60 s).
PAYMENTS_CHARGE_MAX_ATTEMPTS = env.integer("PAYMENTS_CHARGE_MAX_ATTEMPTS", 5, minimum=1)
PAYMENTS_RETRY_BASE_SECONDS = env.integer("PAYMENTS_RETRY_BASE_MS", 1000, minimum=1) / 1000
# Orders that need an operator's approval (`manage.py order approve ID`) wait this long, then are
# cancelled (approval_timeout). An order needs it when `orders.auto-reserve` is off for its owner, or
# when its amount is at least ORDERS_APPROVAL_THRESHOLD_CENTS (0: no threshold).
ORDERS_APPROVAL_TIMEOUT_SECONDS = env.integer("ORDERS_APPROVAL_TIMEOUT_SECONDS", 24 * 3600, minimum=1)
ORDERS_APPROVAL_THRESHOLD_CENTS = env.integer("ORDERS_APPROVAL_THRESHOLD_CENTS", 0, minimum=0)

# --- Admin bootstrap (used by `manage.py ensure_admin`) ---------------------------------------
ADMIN_USERNAME = env.text("DJANGO_SUPERUSER_USERNAME", "admin")
ADMIN_EMAIL = env.text("DJANGO_SUPERUSER_EMAIL", "admin@example.com")
ADMIN_PASSWORD = env.text("DJANGO_SUPERUSER_PASSWORD", "")


def broker_transport_options(broker_url: str) -> dict[str, object]:
    """Return kombu transport options suited to the broker URL's transport."""
    if broker_url.startswith(("redis://", "rediss://")):
        if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                "CELERY_VISIBILITY_TIMEOUT must be greater than CELERY_TASK_TIME_LIMIT "
                f"({CELERY_VISIBILITY_TIMEOUT} <= {CELERY_TASK_TIME_LIMIT})."
            )
        # The relay writes task messages itself (apps/outbox/transports.py); they match priority 0.
        return {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
    if broker_url.startswith("filesystem://"):
        folder = VAR_DIR / "broker"
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # The filesystem transport polls; a short interval keeps `make run` responsive.
            "polling_interval": 0.1,
        }
    return {}


def cache_config(redis_url: str) -> dict[str, dict[str, object]]:
    """Return CACHES: Redis when a URL is given, otherwise process-local memory."""
    if redis_url:
        return {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": "taskplane",
                "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
            }
        }
    return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


# --- Resilience ------------------------------------------------------------------------------
# Breaker, rate-limit, bulkhead and lock state shared by every process. Empty means REDIS_URL;
# with neither set (the embedded `make run`), the kit keeps process-local state and says so.
RESILIENCE_REDIS_URL = env.url("RESILIENCE_REDIS_URL", "", schemes=("redis", "rediss"))
RESILIENCE_KEY_PREFIX = env.text("RESILIENCE_KEY_PREFIX", "taskplane:res")
# Every resilience call to Redis is bounded by this; a slow Redis must not stall the caller.
RESILIENCE_REDIS_TIMEOUT_SECONDS = env.integer("RESILIENCE_REDIS_TIMEOUT_MS", 250, minimum=1) / 1000
# After a Redis error, state stays process-local this long before Redis is tried again.
RESILIENCE_REDIS_RETRY_SECONDS = env.integer("RESILIENCE_REDIS_RETRY_MS", 5000, minimum=1) / 1000
BREAKER_FAILURE_THRESHOLD = env.integer("BREAKER_FAILURE_THRESHOLD", 5, minimum=1)
BREAKER_FAILURE_RATE_PERCENT = env.integer("BREAKER_FAILURE_RATE_PERCENT", 50, minimum=1)
BREAKER_MINIMUM_CALLS = env.integer("BREAKER_MINIMUM_CALLS", 20, minimum=1)
BREAKER_WINDOW_SECONDS = env.integer("BREAKER_WINDOW_SECONDS", 60, minimum=1)
BREAKER_OPEN_SECONDS = env.integer("BREAKER_OPEN_SECONDS", 30, minimum=1)
BREAKER_HALF_OPEN_CALLS = env.integer("BREAKER_HALF_OPEN_CALLS", 1, minimum=1)
LOCK_TTL_SECONDS = env.integer("LOCK_TTL_SECONDS", 30, minimum=1)
BULKHEAD_LEASE_SECONDS = env.integer("BULKHEAD_LEASE_SECONDS", 15, minimum=1)
HTTP_CLIENT_MAX_ATTEMPTS = env.integer("HTTP_CLIENT_MAX_ATTEMPTS", 3, minimum=1)
HTTP_CLIENT_BACKOFF_BASE_SECONDS = env.integer("HTTP_CLIENT_BACKOFF_BASE_MS", 200, minimum=1) / 1000
HTTP_CLIENT_BACKOFF_MAX_SECONDS = env.integer("HTTP_CLIENT_BACKOFF_MAX_MS", 5000, minimum=1) / 1000
HTTP_CLIENT_MAX_TOTAL_DELAY_SECONDS = env.integer("HTTP_CLIENT_MAX_TOTAL_DELAY_MS", 15000, minimum=0) / 1000
# The most of a response body a client reads before it gives up (http_client(max_response_bytes=...)).
HTTP_CLIENT_MAX_RESPONSE_BYTES = env.integer("HTTP_CLIENT_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, minimum=1)
# Per-host breakers one client keeps in memory; the least recently used go first (their state stays in Redis).
HTTP_CLIENT_MAX_HOST_BREAKERS = env.integer("HTTP_CLIENT_MAX_HOST_BREAKERS", 1000, minimum=1)
# UrlGuard.from_settings(): plain http for user-supplied URLs (development only), and non-public
# networks allowed all the same (e.g. a local webhook receiver); both are off by default.
HTTP_GUARD_ALLOW_HTTP = env.boolean("HTTP_GUARD_ALLOW_HTTP", False)
HTTP_GUARD_ALLOWED_NETWORKS = env.networks("HTTP_GUARD_ALLOWED_NETWORKS", [])

# --- Schedules (docs/schedules.md) -------------------------------------------------------------
# celery beat runs the database schedules through this scheduler class (static entries stay in workers/beat.py).
CELERY_BEAT_SCHEDULER = "workers.schedule_beat:DatabaseFiringScheduler"
SCHEDULES_BATCH_SIZE = env.integer("SCHEDULES_BATCH_SIZE", 500, minimum=1)
# Occurrences one claim decides per schedule (missed ones after a long outage are recorded over several ticks).
SCHEDULES_MAX_OCCURRENCES_PER_CLAIM = env.integer("SCHEDULES_MAX_OCCURRENCES_PER_CLAIM", 1000, minimum=1)
# The longest the firing loop sleeps without a change signal (a safety net for a lost NOTIFY).
SCHEDULES_MAX_SLEEP_SECONDS = env.integer("SCHEDULES_MAX_SLEEP_MS", 5000, minimum=10) / 1000
# An enqueued or running fire older than this no longer holds back its schedule's overlap policy.
SCHEDULES_FIRE_STALE_SECONDS = env.integer("SCHEDULES_FIRE_STALE_SECONDS", 3600, minimum=1)
SCHEDULES_FIRE_RETENTION_DAYS = env.integer("SCHEDULES_FIRE_RETENTION_DAYS", 30, minimum=1)
SCHEDULES_BACKFILL_MAX = env.integer("SCHEDULES_BACKFILL_MAX", 1000, minimum=1)

# --- Email (docs/emails.md) -------------------------------------------------------------------


def email_connection(parsed: dict[str, object]) -> dict[str, object]:
    """Django's EMAIL_* connection settings from a parsed EMAIL_URL; EMAIL_BACKEND may replace the backend."""
    return {
        "EMAIL_BACKEND": env.text("EMAIL_BACKEND", parsed["EMAIL_BACKEND"]),
        "EMAIL_HOST": parsed["EMAIL_HOST"] or "localhost",
        "EMAIL_PORT": parsed["EMAIL_PORT"] or 25,
        "EMAIL_HOST_USER": parsed["EMAIL_HOST_USER"] or "",
        "EMAIL_HOST_PASSWORD": parsed["EMAIL_HOST_PASSWORD"] or "",
        "EMAIL_USE_TLS": bool(parsed.get("EMAIL_USE_TLS")),
        "EMAIL_USE_SSL": bool(parsed.get("EMAIL_USE_SSL")),
    }


# EMAIL_URL is parsed by django-environ (smtp://, smtp+tls:// for STARTTLS, smtp+ssl://, console:);
# production requires it. EMAIL_BACKEND overrides the backend the URL implies (e.g. django-anymail's).
globals().update(email_connection(env.email("EMAIL_URL", "console:")))
DEFAULT_FROM_EMAIL = env.text("DEFAULT_FROM_EMAIL", "Taskplane <noreply@localhost>")
EMAIL_TIMEOUT = env.integer("EMAIL_TIMEOUT_SECONDS", 10, minimum=1)
# Sends of one email that end in a transient SMTP error before it is marked failed.
EMAIL_MAX_ATTEMPTS = env.integer("EMAIL_MAX_ATTEMPTS", 5, minimum=1)
# Sent emails are deleted this long after sending.
EMAILS_RETENTION_DAYS = env.integer("EMAILS_RETENTION_DAYS", 30, minimum=1)
# Failed emails wait for an operator's retry this long (counted from when the email was asked for), then go.
EMAILS_FAILED_RETENTION_DAYS = env.integer("EMAILS_FAILED_RETENTION_DAYS", 90, minimum=1)

# --- Webhooks (docs/notifications.md) ----------------------------------------------------------
# Seconds before each attempt of a delivery, the first one included (Svix: now, 5 s, 5 min, 30 min,
# 2 h, 5 h, 10 h, 10 h); each but an immediate one gets up to 10% jitter. Exhausted = failed.
WEBHOOKS_RETRY_SCHEDULE = env.seconds_list("WEBHOOKS_RETRY_SCHEDULE", [0, 5, 300, 1800, 7200, 18000, 36000, 36000])
# After a rotation the previous secret keeps signing alongside the new one this long.
WEBHOOKS_SECRET_GRACE_SECONDS = env.integer("WEBHOOKS_SECRET_GRACE_SECONDS", 24 * 3600, minimum=0)
# An endpoint whose attempts have all failed for this long (none succeeded since) is disabled, owner emailed.
WEBHOOKS_DISABLE_AFTER_SECONDS = env.integer("WEBHOOKS_DISABLE_AFTER_SECONDS", 5 * 86400, minimum=1)
# One attempt's total connect + read budget, and the most of a response body read (2 KiB of it is kept).
WEBHOOKS_TIMEOUT_SECONDS = env.integer("WEBHOOKS_TIMEOUT_SECONDS", 15, minimum=1)
WEBHOOKS_MAX_RESPONSE_BYTES = env.integer("WEBHOOKS_MAX_RESPONSE_BYTES", 64 * 1024, minimum=1)
# SSRF guard: endpoint hosts must resolve to public addresses unless private hosts are allowed; an
# allow-list (exact names or "*.example.com") restricts endpoints to those hosts. http:// needs ALLOW_HTTP.
WEBHOOKS_ALLOW_PRIVATE_HOSTS = env.boolean("WEBHOOKS_ALLOW_PRIVATE_HOSTS", False)
WEBHOOKS_ALLOWED_HOSTS = env.csv("WEBHOOKS_ALLOWED_HOSTS", [])
WEBHOOKS_ALLOW_HTTP = env.boolean("WEBHOOKS_ALLOW_HTTP", False)
# Messages older than this are deleted with their deliveries and attempts, unless one is still in flight.
WEBHOOKS_RETENTION_DAYS = env.integer("WEBHOOKS_RETENTION_DAYS", 30, minimum=1)
