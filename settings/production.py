"""Production settings: every required variable must be set and well-formed, or start-up fails."""

from settings import env
from settings.base import *  # noqa: F403
from settings.base import broker_transport_options, cache_config, email_connection

DEBUG = False
SECRET_KEY = env.text("SECRET_KEY")
if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters and not a django-insecure key.")
ALLOWED_HOSTS = env.csv("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.csv("CSRF_TRUSTED_ORIGINS", [])

DATABASES = {"default": env.database("DATABASE_URL", schemes=("postgres", "postgresql", "pgsql"))}
DATABASES["default"]["CONN_MAX_AGE"] = env.integer("DATABASE_CONN_MAX_AGE", 60, minimum=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

CELERY_BROKER_URL = env.url("CELERY_BROKER_URL", schemes=("redis", "rediss", "amqp", "amqps"))
CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL)
# Shared state (throttle counters, breakers, limiters, locks, flag-change signals) lives in Redis.
REDIS_URL = env.url("REDIS_URL", schemes=("redis", "rediss"))
CACHES = cache_config(REDIS_URL)
FERNET_KEYS = env.fernet_keys("FERNET_KEYS")
# Where mail goes: required, so a deployment never silently prints mail to a console.
globals().update(email_connection(env.email("EMAIL_URL")))

# The payment provider of the checkout saga: required (the sandbox provider is never served here).
PAYMENTS_URL = env.url("PAYMENTS_URL", schemes=("https", "http"))
PAYMENTS_SANDBOX = False

# Hardening. TLS usually ends at a proxy or ingress: set USE_X_FORWARDED_PROTO=true only when that
# proxy overwrites X-Forwarded-Proto, otherwise a client could claim HTTPS.
if env.boolean("USE_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.boolean("SECURE_SSL_REDIRECT", True)
# Probes and Prometheus scrape over plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.boolean("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

METRICS_PUBLIC = False
if not SECURE_HSTS_PRELOAD:
    # Preloading is a one-way commitment for the whole domain; it stays an explicit opt-in.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
