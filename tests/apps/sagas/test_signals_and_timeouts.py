"""Signals, the sweeper's timeouts and deadlines, and the races a compare-and-set must win."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction

from apps.core.audit import Actor
from apps.outbox.delivery import event_deliver
from apps.outbox.registry import subscriber_named
from apps.sagas.engine import step_run
from apps.sagas.models import SagaInstance, SagaSignal, SagaStepAttempt
from apps.sagas.services import saga_cancel, saga_start
from apps.sagas.sweeper import saga_sweep
from tests.apps.sagas.sagas_under_test import APPROVAL, HOLD, _redis, calls
from tests.apps.sagas.support import run_scheduled, start, timeline
from tests.database import backends_waiting_on_locks
from tests.helpers import wait_until

SUBSCRIBER = f"sagas.signal:{APPROVAL}"


def _signal(key: str, payload: dict) -> str:
    """Deliver an APPROVAL event to the saga engine's subscriber, as the relay would (inbox-deduplicated)."""
    event = {"id": str(uuid.uuid4()), "topic": APPROVAL, "key": key, "payload": payload, "headers": {}}
    return event_deliver(subscriber=SUBSCRIBER, event=event)


def _expire(saga: SagaInstance, **filters) -> None:
    """Move the deadline of the saga's open attempts into the past (as if the time had passed)."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE sagas_sagastepattempt SET deadline_at = statement_timestamp() - interval '1 second' "
                       "WHERE instance_id = %s AND state IN ('scheduled', 'running', 'waiting')", [saga.pk])


@pytest.mark.django_db
def test_every_declared_signal_topic_has_its_subscriber():
    assert subscriber_named(SUBSCRIBER) is not None


@pytest.mark.django_db
def test_signal_arriving_during_the_wait_completes_it_and_merges_its_payload():
    saga = run_scheduled(start("tests.signal", "k1"))
    wait = SagaStepAttempt.objects.get(instance=saga, kind="signal")
    assert (wait.state, wait.signal_topic, wait.signal_key) == ("waiting", APPROVAL, "k1")
    assert wait.deadline_at is not None

    assert _signal("other-key", {"approved": False}) == "handled"  # another key: kept, completes nothing
    assert _signal("k1", {"approved_by": "ana"}) == "handled"
    saga = run_scheduled(saga)

    assert saga.state == "completed"
    assert saga.context["approved_by"] == "ana"
    assert SagaSignal.objects.get(key="k1").consumed_by_id == wait.pk
    assert SagaSignal.objects.get(key="other-key").consumed_by_id is None


@pytest.mark.django_db
def test_signal_arriving_before_the_wait_is_kept_and_consumed_when_it_begins():
    _signal("k1", {"approved_by": "early"})
    saga = run_scheduled(start("tests.signal", "k1"))

    assert saga.state == "completed"
    assert saga.context["approved_by"] == "early"
    assert SagaStepAttempt.objects.get(instance=saga, kind="signal").state == "succeeded"
    assert SagaSignal.objects.get(key="k1").consumed_by is not None


@pytest.mark.django_db
def test_signal_that_never_comes_times_out_and_compensates():
    saga = run_scheduled(start("tests.signal_short", "k1"))
    assert SagaStepAttempt.objects.get(instance=saga, kind="signal").state == "waiting"
    assert saga_sweep()["timed_out"] == 0  # not yet due

    _expire(saga)
    assert saga_sweep()["timed_out"] == 1
    saga = run_scheduled(saga)

    assert saga.state == "compensated"
    assert "did not arrive within 1s" in saga.failure
    assert calls() == ["k1:a:action:1", "k1:a:compensation:1"]
    _signal("k1", {"late": True})  # a late signal changes nothing
    assert SagaInstance.objects.get(pk=saga.pk).state == "compensated"


@pytest.mark.django_db
def test_schedule_to_start_timeout_retries_then_compensates_via_the_sweeper():
    saga = start("tests.schedule_to_start", "k1")  # no worker picks the step up
    first = SagaStepAttempt.objects.get(instance=saga)
    assert first.deadline_at is not None

    _expire(saga)
    assert saga_sweep()["timed_out"] == 1
    _expire(saga)
    assert saga_sweep()["timed_out"] == 1

    saga = SagaInstance.objects.get(pk=saga.pk)
    assert saga.state == "compensated"
    assert [(a, s) for _, _, a, s in timeline(saga)] == [(1, "timed_out"), (2, "timed_out")]
    assert calls() == []  # never started: nothing to compensate


@pytest.mark.django_db
def test_schedule_to_close_ends_the_retries_of_a_step():
    saga = run_scheduled(start("tests.schedule_to_close", "k1", fail={"b": {"times": -1}}), only=3)
    b = SagaStepAttempt.objects.filter(instance=saga, step="b").order_by("attempt")
    assert [a.state for a in b] == ["failed", "failed", "scheduled"]  # within its 30 s: retried
    first = b[0]
    assert b[2].deadline_at <= first.scheduled_at + timedelta(seconds=30)  # the open attempt ends with the budget
    SagaStepAttempt.objects.filter(pk=first.pk).update(scheduled_at=first.scheduled_at - timedelta(seconds=60))

    saga = run_scheduled(saga)

    assert saga.state == "compensated"
    assert "schedule-to-close: no time left" in saga.failure
    assert SagaStepAttempt.objects.filter(instance=saga, step="b").count() == 3  # 50 allowed by the policy


@pytest.mark.django_db
def test_saga_deadline_stops_a_waiting_saga_and_compensates():
    saga = run_scheduled(start("tests.deadline", "k1"))
    assert SagaStepAttempt.objects.get(instance=saga, kind="signal").state == "waiting"
    SagaInstance.objects.filter(pk=saga.pk).update(deadline_at=saga.created_at)

    assert saga_sweep()["deadline_passed"] == 1
    saga = run_scheduled(saga)

    assert saga.state == "compensated"
    assert "deadline" in saga.failure
    assert SagaStepAttempt.objects.get(instance=saga, kind="signal").state == "cancelled"


@pytest.mark.django_db
def test_a_lost_dispatch_is_sent_again_and_still_runs_once(settings):
    settings.SAGAS_STEP_LOST_SECONDS = 1
    saga = start("tests.three", "k1")
    attempt = SagaStepAttempt.objects.get(instance=saga)
    with connection.cursor() as cursor:  # the relay published it long ago, and the broker lost it
        cursor.execute("UPDATE outbox_outboxmessage SET status = 'published', available_at = available_at - "
                       "interval '1 minute' WHERE message_id = %s", [attempt.task_id])
        cursor.execute("UPDATE sagas_sagastepattempt SET scheduled_at = scheduled_at - interval '1 minute' "
                       "WHERE id = %s", [attempt.pk])

    assert saga_sweep()["redispatched"] == 1
    assert saga_sweep()["redispatched"] == 0  # its new dispatch is pending: not lost

    again = SagaStepAttempt.objects.get(pk=attempt.pk)
    assert again.task_id != attempt.task_id
    assert step_run(attempt_id=attempt.pk) == "succeeded"
    assert step_run(attempt_id=attempt.pk) == "already-succeeded"  # the old message, delivered after all
    assert calls() == ["k1:a:action:1"]


@pytest.mark.django_db(transaction=True)
def test_a_late_completion_of_a_timed_out_attempt_loses_and_changes_nothing():
    saga = start("tests.slow", "k1")
    run_scheduled(saga, only=1)  # a
    slow = SagaStepAttempt.objects.get(instance=saga, step="slow")
    _redis().set(HOLD, "1")
    outcome = {}

    def run() -> None:
        try:
            outcome["result"] = step_run(attempt_id=slow.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_until(lambda: SagaStepAttempt.objects.get(pk=slow.pk).state == "running", timeout=10)
        _expire(saga)
        assert saga_sweep()["timed_out"] == 1  # the sweeper wins: attempt 2 is scheduled
    finally:
        _redis().delete(HOLD)
        worker.join(timeout=30)

    assert outcome["result"] == "lost"
    late = SagaStepAttempt.objects.get(pk=slow.pk)
    assert (late.state, late.result) == ("timed_out", None)
    saga = SagaInstance.objects.get(pk=saga.pk)
    assert "slow_done" not in saga.context
    assert [a.state for a in SagaStepAttempt.objects.filter(instance=saga, step="slow").order_by("attempt")] == [
        "timed_out", "scheduled"]
    assert run_scheduled(saga).state == "completed"


@pytest.mark.django_db(transaction=True)
def test_two_transactions_starting_the_same_saga_make_one_instance():
    """The first start holds its transaction open; the second, on another connection, must wait for it and
    then return the first's instance (no second saga, no error in the caller's transaction)."""
    first_written, release = threading.Event(), threading.Event()
    results, errors = {}, []

    def starter(name: str, hold: bool) -> None:
        try:
            with transaction.atomic():
                results[name] = saga_start("tests.three", key="race", input={"who": name}).pk
                if hold:
                    first_written.set()
                    release.wait(timeout=30)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    first = threading.Thread(target=starter, args=("first", True))
    first.start()
    assert first_written.wait(timeout=30)
    second = threading.Thread(target=starter, args=("second", False))
    second.start()
    wait_until(lambda: backends_waiting_on_locks() >= 1, timeout=30, message="the second start to wait")
    assert "second" not in results
    release.set()
    for thread in (first, second):
        thread.join(timeout=30)

    assert errors == []
    instance = SagaInstance.objects.get(name="tests.three", key="race")
    assert results == {"first": instance.pk, "second": instance.pk}
    assert instance.input == {"who": "first"}
    assert SagaStepAttempt.objects.filter(instance=instance).count() == 1


@pytest.mark.django_db(transaction=True)
def test_cancel_while_a_step_runs_in_another_thread_waits_for_it_then_compensates_it():
    """The completion read the instance before the cancel moved its version: its CAS loses, it reads again,
    sees the cancel and compensates the step it just finished along with the earlier one."""
    saga = start("tests.slow", "k1")
    run_scheduled(saga, only=1)  # a
    slow = SagaStepAttempt.objects.get(instance=saga, step="slow")
    _redis().set(HOLD, "1")
    outcome = {}

    def run() -> None:
        try:
            outcome["result"] = step_run(attempt_id=slow.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_until(lambda: SagaStepAttempt.objects.get(pk=slow.pk).state == "running", timeout=10)
        saga_cancel(saga_id=saga.pk, actor=Actor(name="ops", via="cli"), reason="stop")
        assert SagaInstance.objects.get(pk=saga.pk).state == "running"  # the step is still in flight
    finally:
        _redis().delete(HOLD)
        worker.join(timeout=30)

    assert outcome["result"] == "succeeded"
    saga = run_scheduled(saga)
    assert saga.state == "cancelled"
    assert calls() == ["k1:a:action:1", "k1:slow:action:1", "k1:slow:compensation:1", "k1:a:compensation:1"]
    assert not SagaStepAttempt.objects.filter(instance=saga, step="c").exists()
