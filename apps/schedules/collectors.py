"""The due-but-unfired gauge, read from the database at scrape time (a property of the table, not a process)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import DatabaseError, connection, transaction
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.schedules.models import Schedule

logger = logging.getLogger(__name__)
DUE_UNFIRED = "taskplane_schedule_due_unfired"
HELP = "Enabled schedules whose next fire is more than a second overdue (no beat is firing them)"
STATEMENT_TIMEOUT_MS = 2000


def due_unfired_count() -> int:
    """Enabled schedules with next_fire_at more than 1 s before the database's now (read on the due index)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
                cursor.execute(
                    f"SELECT count(*) FROM {Schedule._meta.db_table} WHERE enabled "  # noqa: S608
                    "AND next_fire_at IS NOT NULL AND next_fire_at < now() - interval '1 second'")
                return cursor.fetchone()[0]
        from django.utils import timezone

        return Schedule.objects.filter(enabled=True, next_fire_at__lt=timezone.now()).count()


class DueUnfiredCollector(Collector):
    """Yields the gauge; nothing when the database is unreachable (the gap is the signal)."""

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(DUE_UNFIRED, HELP)

    def collect(self) -> Iterator[Metric]:
        try:
            count = due_unfired_count()
        except DatabaseError as exc:
            logger.warning("Schedules metrics skipped, database unavailable: %s", exc)
            return
        yield GaugeMetricFamily(DUE_UNFIRED, HELP, value=count)


_registered: DueUnfiredCollector | None = None


def register_due_unfired_collector() -> DueUnfiredCollector:
    """Register the collector on the global registry once."""
    global _registered
    if _registered is None:
        _registered = DueUnfiredCollector()
        REGISTRY.register(_registered)
    return _registered
