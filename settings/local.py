"""Embedded default for `make run`: SQLite (WAL), a filesystem broker and an in-memory cache.

Set DATABASE_URL, CELERY_BROKER_URL and REDIS_URL to run the same processes against PostgreSQL,
Redis or RabbitMQ instead.
"""

from settings import env
from settings.base import *  # noqa: F403
from settings.base import VAR_DIR, broker_transport_options, cache_config

VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.boolean("DEBUG", True)
SECRET_KEY = env.text("SECRET_KEY", "django-insecure-local-only-key-never-use-this-in-production")
ALLOWED_HOSTS = env.csv("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
LOG_FORMAT = env.text("LOG_FORMAT", "text")
LOGGING = build_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)  # noqa: F405

_sqlite_url = f"sqlite:///{VAR_DIR / 'taskplane.sqlite3'}"
DATABASES = {"default": env.database("DATABASE_URL", _sqlite_url)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # WAL lets the web, worker and beat processes read while one writes; IMMEDIATE transactions
    # take the write lock up front so concurrent writers wait (busy timeout) instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

CELERY_BROKER_URL = env.url(
    "CELERY_BROKER_URL", "filesystem://localhost//", schemes=("filesystem", "redis", "rediss", "amqp", "amqps")
)
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL)
REDIS_URL = env.url("REDIS_URL", "", schemes=("redis", "rediss"))
CACHES = cache_config(REDIS_URL)

# Serve static files from the apps directly so `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Webhook receivers on this machine (loopback, plain http) are allowed here; the variables still win.
WEBHOOKS_ALLOW_PRIVATE_HOSTS = env.boolean("WEBHOOKS_ALLOW_PRIVATE_HOSTS", True)
WEBHOOKS_ALLOW_HTTP = env.boolean("WEBHOOKS_ALLOW_HTTP", True)
