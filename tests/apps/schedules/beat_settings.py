"""Test settings for `celery beat` processes of the schedules tests: the test tasks join the contract."""

from settings.test import *  # noqa: F403

CELERY_INCLUDE = ["tests.apps.schedules.schedule_tasks"]
