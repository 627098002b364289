"""Prometheus instruments of the saga engine (counted at commit, so a rolled-back transition counts nothing)."""

from __future__ import annotations

from django.db import transaction
from prometheus_client import Counter, Histogram

STARTED = Counter("taskplane_sagas_started_total", "Saga instances started", ["saga"])
COMPLETED = Counter("taskplane_sagas_completed_total", "Saga instances that completed every step", ["saga"])
COMPENSATED = Counter("taskplane_sagas_compensated_total", "Saga instances compensated after a failure", ["saga"])
CANCELLED = Counter("taskplane_sagas_cancelled_total", "Saga instances compensated after a cancel", ["saga"])
FAILED = Counter("taskplane_sagas_failed_total",
                 "Saga instances whose compensation failed (compensation_failed: an operator must act)", ["saga"])
STEP_SECONDS = Histogram(
    "taskplane_saga_step_duration_seconds", "Run time of one step attempt (action or compensation), by outcome",
    ["saga", "step", "kind", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

_ENDINGS = {"completed": COMPLETED, "compensated": COMPENSATED, "cancelled": CANCELLED,
            "compensation_failed": FAILED}


def count_started(saga: str) -> None:
    """Count a started instance once the caller's transaction commits."""
    transaction.on_commit(lambda: STARTED.labels(saga).inc())


def count_ending(saga: str, state: str) -> None:
    """Count an instance reaching ``state`` (a terminal state, or compensation_failed) at commit."""
    counter = _ENDINGS.get(state)
    if counter is not None:
        transaction.on_commit(lambda: counter.labels(saga).inc())


def observe_step(*, saga: str, step: str, kind: str, outcome: str, seconds: float) -> None:
    """Record one attempt's run time."""
    STEP_SECONDS.labels(saga, step, kind, outcome).observe(seconds)
