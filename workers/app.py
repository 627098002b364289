"""The Celery application, configured from Django settings (CELERY_* names)."""

from celery import Celery

from settings import env

# Like the WSGI entry point, a worker reads .env and then, without DJANGO_SETTINGS_MODULE, runs production
# settings, which refuse to start without their variables instead of silently using the embedded default.
env.load(default_settings="settings.production")

app = Celery("taskplane")
app.config_from_object("django.conf:settings", namespace="CELERY")

from workers import observability, startup  # noqa: E402  (signal handlers need the app)
from workers.beat import BEAT_SCHEDULE  # noqa: E402
from workers.queues import TASK_QUEUES, task_routes  # noqa: E402

app.conf.task_queues = TASK_QUEUES
app.conf.task_routes = task_routes()
app.conf.beat_schedule = BEAT_SCHEDULE
# Task modules are imported when the worker starts, after Django is set up.
app.conf.imports = ["workers.tasks.core", "workers.tasks.outbox", "workers.tasks.idempotency", "workers.tasks.flags",
                    "workers.tasks.sagas", "workers.tasks.schedules", "workers.tasks.emails",
                    "workers.tasks.notifications"]
observability.connect(app)
startup.connect(app)

from workers import schedule_fires  # noqa: E402  (schedule fire states, docs/schedules.md)

schedule_fires.connect(app)
