"""Settings for the test suite: real PostgreSQL, Redis and RabbitMQ on loopback, overridable by env."""

from settings import env
from settings.base import *  # noqa: F403
from settings.base import broker_transport_options, cache_config

DEBUG = False
SECRET_KEY = "test-only-secret-key-with-enough-length-to-be-unpredictable-0123456789"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

DATABASES = {
    "default": env.database(
        "TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/taskplane", schemes=("postgres", "postgresql")
    )
}
DATABASES["default"]["TEST"] = {"NAME": env.text("TEST_DATABASE_NAME", "test_taskplane")}

# Dedicated Redis database numbers keep the suite away from anything else on the server.
REDIS_URL = env.url("TEST_REDIS_URL", "redis://127.0.0.1:6379/15", schemes=("redis", "rediss"))
CACHES = cache_config(REDIS_URL)
CELERY_BROKER_URL = env.url(
    "TEST_BROKER_URL", "redis://127.0.0.1:6379/14", schemes=("redis", "rediss", "amqp", "amqps")
)
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL)
# The fault-injection stacks (tests/reliability) kill whole workers: a Redis broker gives their unacknowledged
# messages back once older than the visibility timeout, found by a sweep every unacked_restore_interval ×
# unacked_restore_throttle seconds (kombu's defaults: 10 × 10). This makes the sweep run every N seconds.
_UNACKED_RESTORE_SECONDS = env.integer("TEST_UNACKED_RESTORE_SECONDS", 0, minimum=0)
if _UNACKED_RESTORE_SECONDS and CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS |= {"unacked_restore_interval": _UNACKED_RESTORE_SECONDS,
                                        "unacked_restore_throttle": 1}
RABBITMQ_URL = env.url("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//", schemes=("amqp", "amqps"))

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# High enough that ordinary tests never trip it; throttling tests override it.
API_THROTTLE_RATE = "100000/min"
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {"principal": API_THROTTLE_RATE, "anonymous": "100000/min"}  # noqa: F405
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# Breakers, limiters and locks get their own database, emptied by the resilience tests.
RESILIENCE_REDIS_URL = env.url("TEST_RESILIENCE_REDIS_URL", "redis://127.0.0.1:6379/8", schemes=("redis", "rediss"))

# Webhook receivers on this machine (loopback, plain http) are allowed here; the variables still win.
WEBHOOKS_ALLOW_PRIVATE_HOSTS = env.boolean("WEBHOOKS_ALLOW_PRIVATE_HOSTS", True)
WEBHOOKS_ALLOW_HTTP = env.boolean("WEBHOOKS_ALLOW_HTTP", True)

# The suite's payment provider for child processes (workers): tests/conftest.py starts a stub server on
# loopback and names it here; unset, the sandbox routes are served as under local settings.
if env.is_set("TEST_PAYMENTS_URL"):
    PAYMENTS_URL = env.url("TEST_PAYMENTS_URL", schemes=("http",))
    PAYMENTS_SANDBOX = False
