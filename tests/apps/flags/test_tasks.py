"""flag_gated (skip or defer a task whose flag is off) and flags.apply_scheduled, in-process and with a
real beat and worker."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.core.task_contract import FLAGS_APPLY_SCHEDULED, TASK_QUEUES
from apps.flags import snapshot as flags_snapshot
from apps.flags.context import set_context
from apps.flags.models import FlagChange, ScheduledFlagChange
from apps.flags.services import flag_save
from apps.flags.tasks_support import flag_gated
from apps.outbox.models import OutboxMessage
from tests.helpers import wait_until
from tests.processes import celery_process
from tests.reliability.support import private_redis

GATE = "reports.nightly"


@pytest.fixture(autouse=True)
def _no_bound_context():
    yield
    set_context(None)


def _save(key: str, **fields):
    flag = flag_save(definition={"key": key, "enabled": True, **fields}, actor="tests", reason="test fixture")
    flags_snapshot.reload()  # on this test's connection, so it sees the uncommitted flag
    return flag


def _gated_function(**options):
    """A plain function gated like a task; it records its calls (only contract tasks can be registered)."""
    calls: list[tuple] = []

    @flag_gated(GATE, task_name=FLAGS_APPLY_SCHEDULED, **options)
    def build(report_id: int, *, force: bool = False) -> str:
        """Build one report."""
        calls.append((report_id, force))
        return f"built {report_id}"

    return build, calls


def _gated_count(outcome: str) -> float:
    labels = {"task": FLAGS_APPLY_SCHEDULED, "flag": GATE, "outcome": outcome}
    return REGISTRY.get_sample_value("taskplane_flags_gated_tasks_total", labels) or 0.0


@pytest.mark.django_db
def test_the_gate_reads_the_context_the_task_was_bound_to():
    _save(GATE, rules=[{"kind": "users", "params": {"user_ids": ["alice-id"]}}])
    build, calls = _gated_function()
    skipped_before = _gated_count("skipped")

    set_context({"user_id": "alice-id"})  # what task_prerun binds from the message headers
    assert build(1, force=True) == "built 1"
    set_context({"user_id": "bob-id"})
    assert build(2) is None
    set_context(None)
    assert build(3) is None

    assert calls == [(1, True)]
    assert _gated_count("skipped") == skipped_before + 2
    assert build.__name__ == "build" and build.__doc__ == "Build one report."
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_defer_writes_the_same_task_back_to_the_outbox_with_its_delay_and_context():
    _save(GATE, enabled=False)
    build, calls = _gated_function(when_off="defer", defer_seconds=120)
    context = {"user_id": "bob-id", "groups": ["ops"], "staff": False}
    set_context(context)

    before = timezone.now()
    assert build(7, force=True) is None

    assert calls == []
    row = OutboxMessage.objects.get()
    assert (row.kind, row.name, row.queue, row.status) == ("task", FLAGS_APPLY_SCHEDULED, "default", "pending")
    assert json.loads(row.payload) == {"args": [7], "kwargs": {"force": True}}
    # The delay lives in the database (the relay holds the row back), never as a broker ETA.
    assert before + timedelta(seconds=120) <= row.available_at <= timezone.now() + timedelta(seconds=120)
    # Internal context (issue 15 §10): the deferred run evaluates for the same subject, and the
    # subject stays out of the public headers.
    assert row.context["carriers"]["flags"] == context, "the deferred run must evaluate for the same subject"
    assert "flags_context" not in row.headers


@pytest.mark.django_db
def test_a_deferral_rolled_back_with_its_caller_leaves_nothing():
    _save(GATE, enabled=False)
    build, _ = _gated_function(when_off="defer")

    with pytest.raises(RuntimeError, match="caller failed"), transaction.atomic():
        build(1)
        raise RuntimeError("caller failed")

    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_an_unknown_flag_answers_the_gates_default():
    closed, closed_calls = _gated_function()
    opened, opened_calls = _gated_function(default=True)

    assert closed(1) is None and opened(2) == "built 2"
    assert (closed_calls, opened_calls) == ([], [(2, False)])


def test_invalid_gates_are_refused_when_declared():
    with pytest.raises(ValueError, match="when_off"):
        flag_gated(GATE, when_off="retry")
    with pytest.raises(ValueError, match="defer_seconds"):
        flag_gated(GATE, when_off="defer", defer_seconds=0)
    with pytest.raises(ValueError, match="not listed"):
        flag_gated(GATE, task_name="ghost.task")


@pytest.mark.django_db
def test_a_deferral_outside_a_task_needs_the_task_name():
    _save(GATE, enabled=False)

    @flag_gated(GATE, when_off="defer")
    def orphan() -> None:
        """Not a task."""

    with pytest.raises(RuntimeError, match="pass task_name"):
        orphan()


def test_apply_scheduled_is_a_gated_contract_task_that_beat_runs_with_an_expiry():
    from workers.app import app
    from workers.beat import BEAT_SCHEDULE
    from workers.tasks.flags import SCHEDULED_CHANGES_SWITCH, apply_scheduled

    assert apply_scheduled.name == FLAGS_APPLY_SCHEDULED and TASK_QUEUES[FLAGS_APPLY_SCHEDULED] == "default"
    registered = app.tasks[FLAGS_APPLY_SCHEDULED]
    assert registered.run is apply_scheduled.run and registered.acks_late and registered.time_limit
    assert apply_scheduled.run.flag_gate == {"key": SCHEDULED_CHANGES_SWITCH, "when_off": "skip", "defer_seconds": 60}
    [entry] = [entry for entry in BEAT_SCHEDULE.values() if entry["task"] == FLAGS_APPLY_SCHEDULED]
    assert entry["schedule"] == 30.0 and 0 < entry["options"]["expires"] <= 30


def _scheduled(key: str, percentage: float, **fields) -> ScheduledFlagChange:
    flag = _save(key, rules=[{"kind": "percentage", "params": {"percentage": 10}}], **fields)
    return ScheduledFlagChange.objects.create(flag=flag, run_at=timezone.now() - timedelta(seconds=5),
                                              changes={"percentage": percentage}, reason="ramp to half")


@pytest.mark.django_db
def test_apply_scheduled_applies_a_due_change_once_and_audits_it_as_the_scheduler():
    from workers.tasks.flags import apply_scheduled

    scheduled = _scheduled("rollout.scheduled", 50)

    assert apply_scheduled() == 1
    assert apply_scheduled() == 0  # a redelivered run finds nothing due

    scheduled.refresh_from_db()
    assert scheduled.applied_at is not None
    [change] = FlagChange.objects.filter(flag_key="rollout.scheduled", action="scheduled")
    assert (change.actor, change.reason) == ("scheduler", "scheduled: ramp to half")
    assert {"field": "rules", "before": change.before["rules"], "after": change.after["rules"]} in change.diff
    assert change.after["rules"][0]["params"]["percentage"] == 50


@pytest.mark.django_db
def test_switching_the_scheduler_flag_off_freezes_scheduled_changes():
    from workers.tasks.flags import SCHEDULED_CHANGES_SWITCH, apply_scheduled

    scheduled = _scheduled("rollout.frozen", 50)
    _save(SCHEDULED_CHANGES_SWITCH, enabled=False)

    assert apply_scheduled() is None

    scheduled.refresh_from_db()
    assert scheduled.applied_at is None and not FlagChange.objects.filter(action="scheduled").exists()


# --- with a real worker and beat ----------------------------------------------------------------------------

@pytest.fixture
def broker(tmp_path):
    """A redis-server of the test's own as broker: workers of suites running alongside (this one
    included) share the test broker database and would take each other's messages."""
    with private_redis(tmp_path) as server:
        yield server.url


def _schedule_due_now(path, entry_name: str) -> None:
    """A beat schedule file in which ``entry_name`` last ran a minute ago, as if beat had restarted:
    the starting beat sends it at once instead of after its 30 s interval."""
    from celery.beat import PersistentScheduler

    from workers.app import app

    scheduler = PersistentScheduler(app=app, schedule_filename=str(path))
    try:
        scheduler.schedule[entry_name].last_run_at -= timedelta(minutes=1)
        scheduler.sync()
    finally:
        scheduler.close()


@pytest.mark.django_db(transaction=True)
def test_a_real_beat_and_worker_apply_a_due_change_unless_the_switch_is_off(tmp_path, broker):
    from workers.app import app
    from workers.tasks.flags import SCHEDULED_CHANGES_SWITCH

    scheduled = _scheduled("rollout.by-beat", 50)
    _save(SCHEDULED_CHANGES_SWITCH, enabled=False)
    worker_log = tmp_path / "worker.log"
    with celery_process("worker", worker_log, "--concurrency", "1", "-Q", "default", broker_url=broker):
        with app.connection_for_write(broker) as connection:
            app.send_task(FLAGS_APPLY_SCHEDULED, connection=connection)
        wait_until(lambda: f"skipped: flag {SCHEDULED_CHANGES_SWITCH} is off".encode() in worker_log.read_bytes(),
                   timeout=30, message="the worker to skip the switched-off scheduler")
        scheduled.refresh_from_db()
        assert scheduled.applied_at is None

        _save(SCHEDULED_CHANGES_SWITCH, enabled=True)
        _schedule_due_now(tmp_path / "beat-schedule", "flags-apply-scheduled")
        with celery_process("beat", tmp_path / "beat.log", "--schedule", str(tmp_path / "beat-schedule"),
                            broker_url=broker):
            wait_until(lambda: ScheduledFlagChange.objects.filter(pk=scheduled.pk, applied_at__isnull=False).exists(),
                       timeout=45, message="beat and the worker to apply the scheduled change")

    [change] = FlagChange.objects.filter(flag_key="rollout.by-beat", action="scheduled")
    assert (change.actor, change.reason, change.after["rules"][0]["params"]["percentage"]) == (
        "scheduler", "scheduled: ramp to half", 50)
    assert b"Sending due task flags-apply-scheduled" in (tmp_path / "beat.log").read_bytes()
