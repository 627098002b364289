"""The instances-per-state gauge, counted in the database at scrape time (cheap: open states, by index)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from weakref import WeakKeyDictionary

from django.db import DatabaseError, connection, transaction
from prometheus_client.core import REGISTRY, CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from apps.sagas.models import SagaInstance

logger = logging.getLogger(__name__)
INSTANCES = "taskplane_sagas_instances"
# Terminal states only grow: they are the *_total counters. The states an operator watches are counted
# exactly, each through the (state, created_at) index.
COUNTED_STATES = (SagaInstance.State.RUNNING, SagaInstance.State.COMPENSATING, SagaInstance.State.COMPENSATION_FAILED)
STATEMENT_TIMEOUT_MS = 2000  # a stuck database must not hang the scrape of every other metric

_lock = threading.Lock()
_registered: WeakKeyDictionary[CollectorRegistry, SagaCollector] = WeakKeyDictionary()


def instances_per_state() -> dict[str, int]:
    """How many instances are running, compensating and compensation_failed."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        return {state: SagaInstance.objects.filter(state=state).count() for state in COUNTED_STATES}


class SagaCollector(Collector):
    """Yields the gauge; yields nothing when the database is unreachable (the gap is the signal)."""

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(INSTANCES, "Saga instances per open state", labels=["state"])

    def collect(self) -> Iterator[Metric]:
        try:
            counts = instances_per_state()
        except DatabaseError as exc:
            logger.warning("Saga metrics skipped, database unavailable: %s", exc)
            return
        gauge = GaugeMetricFamily(INSTANCES, "Saga instances per open state", labels=["state"])
        for state, count in counts.items():
            gauge.add_metric([state], count)
        yield gauge


def register_saga_collector(registry: CollectorRegistry | None = None) -> SagaCollector:
    """Register the collector on ``registry`` (default: the global one) once; returns the registered one."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = SagaCollector()
            registry.register(collector)
            _registered[registry] = collector
        return collector
