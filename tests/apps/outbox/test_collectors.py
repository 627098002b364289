"""Outbox backlog gauges: values from the table, one registration, and /metrics survives a database outage."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from apps.outbox import publish
from apps.outbox.collectors import OutboxCollector, register_outbox_collector
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db


def event() -> OutboxMessage:
    with transaction.atomic():
        return publish("order.placed", {"n": 1})


def gauges(collector: OutboxCollector) -> dict[str, float]:
    return {metric.name: metric.samples[0].value for metric in collector.collect()}


def database_down(execute, sql, params, many, context):
    raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")


@pytest.fixture
def global_collector():
    """The collector on the process-wide registry that /metrics serves.

    The app registered it at start-up; unregistering it here would take the outbox gauges away from every
    later test of /metrics (issue 15, §0: test_metrics_exposes_prometheus_text failed after this module).
    """
    collector = register_outbox_collector()
    assert collector in REGISTRY._collector_to_names, "the outbox app registers its collector at start-up"
    return collector


def test_gauges_report_pending_count_and_oldest_pending_age():
    oldest = event()
    event()
    OutboxMessage.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(seconds=90))
    OutboxMessage.objects.create(kind="event", name="x", payload="{}", status="dead",
                                 created_at=timezone.now() - timedelta(days=2))

    values = gauges(OutboxCollector())

    assert values["taskplane_outbox_pending"] == 2
    assert 90 <= values["taskplane_outbox_oldest_pending_age_seconds"] < 150


def test_empty_backlog_reports_zero():
    OutboxMessage.objects.create(kind="event", name="x", payload="{}", status="published")

    assert gauges(OutboxCollector()) == {
        "taskplane_outbox_pending": 0, "taskplane_outbox_oldest_pending_age_seconds": 0.0,
    }


def test_registration_is_idempotent_and_does_not_query_at_startup(django_assert_num_queries):
    registry = CollectorRegistry()

    with django_assert_num_queries(0):
        first = register_outbox_collector(registry)
        second = register_outbox_collector(registry)

    assert first is second
    assert generate_latest(registry).decode().count("# TYPE taskplane_outbox_pending gauge") == 1


def test_unavailable_database_yields_nothing_and_logs(caplog):
    with caplog.at_level(logging.WARNING, logger="apps.outbox.collectors"), connection.execute_wrapper(database_down):
        assert list(OutboxCollector().collect()) == []

    assert "database unavailable" in caplog.text


def test_metrics_endpoint_serves_the_gauges(client, global_collector):
    event()

    page = client.get("/metrics").content.decode()

    assert "taskplane_outbox_pending 1.0" in page
    assert "taskplane_outbox_oldest_pending_age_seconds " in page


def test_metrics_endpoint_still_answers_when_the_database_is_down(client, global_collector):
    with connection.execute_wrapper(database_down):
        response = client.get("/metrics")

    assert response.status_code == 200
    page = response.content.decode()
    assert "taskplane_outbox_pending" not in page
    assert "django_http_requests" in page  # the process's other metrics are still served
