"""Health checks (django-health-check) for the broker, workers and migrations, and the probe views.

Apps add their own checks to /health/ with ``health_check_register`` from their AppConfig.ready (the outbox
registers its relay check), so core never imports them.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools

from celery import Celery
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView
from kombu import Connection, Queue

from apps.core.task_contract import QUEUES


@functools.cache
def control_app() -> Celery:
    """A Celery app used only to talk to the broker (ping workers); the web never sends tasks."""
    app = Celery("taskplane-control", set_as_current=False)
    app.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        broker_connection_retry_on_startup=False,
        task_queues=[Queue(name) for name in QUEUES],
        accept_content=["json"],
    )
    return app


@dataclasses.dataclass
class Broker(HealthCheck):
    """The Celery broker accepts a connection."""

    timeout = datetime.timedelta(seconds=3)

    def run(self) -> None:
        try:
            with Connection(
                settings.CELERY_BROKER_URL,
                transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                connect_timeout=self.timeout.total_seconds(),
            ) as connection:
                connection.ensure_connection(max_retries=1, timeout=self.timeout.total_seconds())
        except Exception as exc:  # any transport error means the broker is not usable
            raise ServiceUnavailable(f"Broker unreachable ({type(exc).__name__})") from exc


@dataclasses.dataclass
class Migrations(HealthCheck):
    """Every migration on disk has been applied to the database."""

    alias: str = DEFAULT_DB_ALIAS

    def run(self) -> None:
        connection = connections[self.alias]
        try:
            executor = MigrationExecutor(connection)
            plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        finally:
            # Checks run on executor threads; a connection left open there would never be reused.
            connection.close()
        if plan:
            raise ServiceUnavailable(f"{len(plan)} migration(s) not applied; run manage.py migrate")


@dataclasses.dataclass
class Workers(HealthCheck):
    """At least one Celery worker answers, and every Taskplane queue has a consumer.

    One broadcast (active_queues) proves both, where a ping followed by an inspect would need two
    round trips through the broker.
    """

    timeout = datetime.timedelta(seconds=2)

    def run(self) -> None:
        try:
            replies = control_app().control.inspect(timeout=self.timeout.total_seconds()).active_queues() or {}
        except OSError as exc:
            raise ServiceUnavailable("Broker unreachable while asking workers") from exc
        if not replies:
            raise ServiceUnavailable("No Celery worker answered")
        served = {queue["name"] for queues in replies.values() for queue in queues}
        missing = sorted(set(QUEUES) - served)
        if missing:
            raise ServiceUnavailable(f"No worker consumes queue(s): {', '.join(missing)}")


_app_checks: list[type[HealthCheck]] = []


def health_check_register(check: type[HealthCheck]) -> None:
    """Add an app's check to /health/ (not to /health/ready); call it from the app's AppConfig.ready."""
    if check not in _app_checks:
        _app_checks.append(check)


class ProbeView(HealthCheckView):
    """HealthCheckView answering 503 (not 500) when a check fails, as load balancers expect."""

    include_app_checks = False  # True: also run the checks apps registered

    async def dispatch(self, request, *args, **kwargs):
        response = await super().dispatch(request, *args, **kwargs)
        if response.status_code == 500:
            response.status_code = 503
        return response

    def get_checks(self):
        yield from super().get_checks()
        if self.include_app_checks:
            for check in _app_checks:  # read per request: apps register after this module is imported
                yield check()


# What the web needs to serve requests. The broker is not among them: requests never talk to it
# (work leaves through the outbox), so a broker outage must not take the web out of rotation.
WEB_CHECKS = [
    "health_check.checks.Database",
    "health_check.checks.Cache",
    Migrations,
]

# /health/: everything, including the broker and a worker answering. /health/ready: the web's needs.
health = ProbeView.as_view(checks=[*WEB_CHECKS, Broker, Workers], include_app_checks=True)
ready = ProbeView.as_view(checks=WEB_CHECKS)


def live(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers; no dependency is consulted."""
    return JsonResponse({"status": "ok"})
