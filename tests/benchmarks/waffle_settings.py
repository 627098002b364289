"""Settings for the flags benchmark only: the test settings plus django-waffle, the baseline it measures.

django-waffle (requirements/bench.txt) reads every flag, and its user and group lists, through a
Django cache on every call. A process-local cache is its fastest configuration, and the one that
goes stale across processes; the benchmark reports it as the baseline, and waffle on the shared
Redis cache (``default`` here) on stderr.
"""

from settings.test import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "waffle"]  # noqa: F405
CACHES = {
    **CACHES,  # noqa: F405
    "waffle": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "waffle-bench"},
}
WAFFLE_CACHE_NAME = "waffle"
