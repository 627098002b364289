"""Settings for the schedules benchmark only: the test settings plus django-celery-beat, the baseline it times."""

from settings.test import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django_celery_beat"]  # noqa: F405
