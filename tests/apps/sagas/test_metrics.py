"""Saga metrics: counters at commit, the step histogram, and the per-state gauge read from the database."""

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from apps.sagas.collectors import register_saga_collector
from tests.apps.sagas.support import run_scheduled, start

pytestmark = pytest.mark.django_db(transaction=True)


def _value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_counters_and_histogram_follow_committed_transitions():
    before = {name: _value(f"taskplane_sagas_{name}_total", saga="tests.three")
              for name in ("started", "completed", "compensated")}
    steps_before = _value("taskplane_saga_step_duration_seconds_count", saga="tests.three", step="a", kind="action",
                          outcome="succeeded")

    run_scheduled(start("tests.three", "ok"))
    run_scheduled(start("tests.three", "no", fail={"b": {"permanent": True}}))
    start("tests.three", "ok")  # the same saga again: not a second start

    assert _value("taskplane_sagas_started_total", saga="tests.three") == before["started"] + 2
    assert _value("taskplane_sagas_completed_total", saga="tests.three") == before["completed"] + 1
    assert _value("taskplane_sagas_compensated_total", saga="tests.three") == before["compensated"] + 1
    assert _value("taskplane_saga_step_duration_seconds_count", saga="tests.three", step="a", kind="action",
                  outcome="succeeded") == steps_before + 2


def test_instances_per_state_gauge_counts_open_states():
    registry = CollectorRegistry()
    register_saga_collector(registry)
    start("tests.three", "one")
    start("tests.three", "two")
    run_scheduled(start("tests.three", "three"))

    assert registry.get_sample_value("taskplane_sagas_instances", {"state": "running"}) == 2
    assert registry.get_sample_value("taskplane_sagas_instances", {"state": "compensating"}) == 0
    assert registry.get_sample_value("taskplane_sagas_instances", {"state": "compensation_failed"}) == 0
