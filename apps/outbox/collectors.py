"""Prometheus gauges of the outbox backlog, read from the database at scrape time.

The backlog is a property of the table, not of a process, so it is measured when scraped rather than
counted in-process (a multi-process counter would disagree between web workers).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from weakref import WeakKeyDictionary

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Min
from django.db.models.functions import Now
from prometheus_client.core import REGISTRY, CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.outbox.models import OutboxMessage

logger = logging.getLogger(__name__)

PENDING = "taskplane_outbox_pending"
OLDEST_PENDING_AGE = "taskplane_outbox_oldest_pending_age_seconds"
# A scrape must not hang on a stuck database: Prometheus would drop every other metric of the target too.
STATEMENT_TIMEOUT_MS = 2000

_lock = threading.Lock()
_registered: WeakKeyDictionary[CollectorRegistry, OutboxCollector] = WeakKeyDictionary()


def pending_backlog() -> tuple[int, float]:
    """Pending row count and the oldest pending row's age in seconds (0 when none), in one query."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        # status='pending' matches the partial index, so this reads the backlog, not the retained history.
        row = OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).aggregate(
            count=Count("id"), age=Now() - Min("created_at")  # the database clock, which writers use
        )
    age = row["age"].total_seconds() if row["age"] is not None else 0.0
    return row["count"], max(0.0, age)


class OutboxCollector(Collector):
    """Yields the pending count and oldest pending age; yields nothing when the database is unreachable."""

    def describe(self) -> Iterator[Metric]:
        # Declaring the names lets the registry check for clashes without querying the database at startup.
        yield GaugeMetricFamily(PENDING, "Outbox messages waiting to be relayed")
        yield GaugeMetricFamily(OLDEST_PENDING_AGE, "Age of the oldest pending outbox message")

    def collect(self) -> Iterator[Metric]:
        try:
            pending, oldest_age = pending_backlog()
        except DatabaseError as exc:
            # /metrics must keep serving the other metrics; the gap in these series is the signal.
            logger.warning("Outbox metrics skipped, database unavailable: %s", exc)
            return
        yield GaugeMetricFamily(PENDING, "Outbox messages waiting to be relayed", value=pending)
        yield GaugeMetricFamily(OLDEST_PENDING_AGE, "Age of the oldest pending outbox message", value=oldest_age)


def register_outbox_collector(registry: CollectorRegistry | None = None) -> OutboxCollector:
    """Register the outbox collector on ``registry`` (default: the global one) once; returns the registered one."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = OutboxCollector()
            registry.register(collector)
            _registered[registry] = collector
        return collector
