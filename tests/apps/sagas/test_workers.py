"""Sagas on real `celery worker` (and `celery beat`) processes, the outbox relay running in the worker."""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest
from django.db import transaction
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from apps.core.task_contract import SAGAS_RUN_STEP
from apps.outbox import publish
from apps.outbox.models import OutboxMessage
from apps.sagas.models import SagaInstance, SagaStepAttempt
from apps.sagas.services import saga_start
from tests.apps.sagas.sagas_under_test import APPROVAL, HOLD, _redis, calls, calls_of
from tests.apps.sagas.support import start
from tests.helpers import wait_until
from tests.processes import NO_RELAY, celery_process
from workers import app

pytestmark = pytest.mark.django_db(transaction=True)
SAGAS = ("--include", "tests.apps.sagas.sagas_under_test")
ENDED = ("completed", "compensated", "cancelled", "compensation_failed")
TRACE_ID = 0x5A6A5A6A5A6A5A6A5A6A5A6A5A6A5A6A


def _ended(*sagas: SagaInstance) -> bool:
    return SagaInstance.objects.filter(pk__in=[s.pk for s in sagas], state__in=ENDED).count() == len(sagas)


def _trace_id(headers: dict) -> int | None:
    parent = headers.get("traceparent")
    return int(parent.split("-")[1], 16) if parent else None


def test_sagas_run_compensate_and_wait_for_signals_on_real_workers(tmp_path, broker_redis):
    span = NonRecordingSpan(SpanContext(trace_id=TRACE_ID, span_id=0x1234, is_remote=True,
                                        trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    with celery_process("worker", tmp_path / "worker.log", "--concurrency", "3", *SAGAS, TRACING_ENABLED="1"):
        with trace.use_span(span):
            happy = start("tests.three", "happy")
        declined = start("tests.three", "declined", fail={"c": {"permanent": True}})
        flaky = start("tests.three", "flaky", fail={"b": {"times": 2}})
        waiting = start("tests.signal", "waiting")
        wait_until(lambda: SagaStepAttempt.objects.filter(instance=waiting, state="waiting").exists(), timeout=60,
                   message="the signal wait to begin")
        with transaction.atomic():
            publish(APPROVAL, {"approved_by": "ana"}, key="waiting")
        wait_until(lambda: _ended(happy, declined, flaky, waiting), timeout=90, message="every saga to end")

    states = dict(SagaInstance.objects.values_list("key", "state"))
    assert states == {"happy": "completed", "declined": "compensated", "flaky": "completed", "waiting": "completed"}
    by_key = {}
    for call in calls():
        key, rest = call.split(":", 1)
        by_key.setdefault(key, []).append(rest)
    assert by_key["happy"] == ["a:action:1", "b:action:1", "c:action:1"]
    assert by_key["declined"] == ["a:action:1", "b:action:1", "c:action:1", "b:compensation:1", "a:compensation:1"]
    assert by_key["flaky"] == ["a:action:1", "b:action:1", "b:action:2", "b:action:3", "c:action:1"]
    assert SagaInstance.objects.get(key="waiting").context["approved_by"] == "ana"
    # one trace across the steps: each step's dispatch was written inside the previous step's task span
    dispatches = OutboxMessage.objects.filter(message_id__in=list(
        SagaStepAttempt.objects.filter(instance=happy, kind="action").exclude(task_id="")
        .values_list("task_id", flat=True)))
    assert dispatches.count() == 3
    assert {_trace_id(row.headers) for row in dispatches} == {TRACE_ID}


def _outcomes(log_text: str, task_id: str) -> list[str]:
    """How each run of ``task_id`` ended, from Celery's own log lines ("succeeded in …: '<result>'")."""
    found = []
    for line in log_text.splitlines():
        if line.startswith("{") and f"[{task_id}] succeeded" in (message := json.loads(line).get("message", "")):
            found.append(message.rsplit(":", 1)[-1].strip().strip("'"))
    return found


def test_a_step_task_delivered_twice_has_one_effect(tmp_path, broker_redis):
    saga = start("tests.three", "twice")  # its dispatch stays in the outbox: nothing relays here
    attempt = SagaStepAttempt.objects.get(instance=saga)
    log = tmp_path / "worker.log"
    task_id = str(uuid.uuid4())
    with celery_process("worker", log, "--concurrency", "2", *SAGAS, *NO_RELAY):
        for _ in range(2):  # the same message twice, as a broker redelivers it
            app.send_task(SAGAS_RUN_STEP, args=[attempt.pk], task_id=task_id)
        wait_until(lambda: len(_outcomes(log.read_text(), task_id)) == 2, timeout=60,
                   message="both deliveries to finish")

    outcomes = sorted(_outcomes(log.read_text(), task_id))
    assert outcomes[1] == "succeeded"
    assert outcomes[0].startswith("already-"), outcomes  # found it claimed or finished: did nothing
    assert calls_of(f"{saga.pk}:a") == 1
    assert SagaStepAttempt.objects.filter(instance=saga, step="b").count() == 1


def test_kill_9_of_a_worker_mid_step_is_recovered_by_the_sweeper(tmp_path, broker_redis):
    _redis().set(HOLD, "1")  # the slow step's first call hangs until its worker is killed
    schedule = str(tmp_path / "beat-schedule")
    sweep = {"SAGAS_SWEEP_SECONDS": "1"}
    with celery_process("beat", tmp_path / "beat.log", "--schedule", schedule, **sweep):
        with celery_process("worker", tmp_path / "doomed.log", "--concurrency", "3", *SAGAS, **sweep) as doomed:
            with transaction.atomic():
                saga = saga_start("tests.slow", key="killed", input={})
            wait_until(lambda: SagaStepAttempt.objects.filter(instance=saga, step="slow", state="running").exists(),
                       timeout=60, message="the slow step to start")
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=30)
        _redis().delete(HOLD)
        with celery_process("worker", tmp_path / "worker.log", "--concurrency", "3", *SAGAS, **sweep):
            wait_until(lambda: _ended(saga), timeout=90, message="the saga to end after the kill")

    saga.refresh_from_db()
    assert saga.state == "completed"
    slow = list(SagaStepAttempt.objects.filter(instance=saga, step="slow").order_by("attempt")
                .values_list("state", flat=True))
    assert slow == ["timed_out", "succeeded"]
    assert calls_of(f"{saga.pk}:a") == 1
    assert calls_of(f"{saga.pk}:c") == 1
