"""The task failure policy (workers/task.py) run in-process through Celery's tracer, on real PostgreSQL.

Issue 15 §2: tasks that raise were acknowledged away and retried, if at all, by Celery countdowns.
Now an application error retries through a delayed outbox row and dead-letters after max_attempts;
an infrastructure error hands the message back to the broker; effect_once tasks have one effect.
Real workers and brokers: tests/workers/test_worker_integration.py.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from celery import states
from celery.exceptions import Reject
from django.db import connection

from apps.core.audit import Actor
from apps.core.task_contract import OUTBOX_DELIVER_EVENT
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.selectors import outbox_stats
from apps.outbox.services import outbox_retry_one
from tests.database import backends_waiting_on_locks
from tests.helpers import wait_until
from tests.workers import policy_tasks
from tests.workers.policy_support import GateLock
from tests.workers.policy_tasks import PLAIN_SUBSCRIBER, PLAIN_TOPIC
from workers.task import taskplane_task
from workers.tasks.outbox import deliver_event

pytestmark = pytest.mark.django_db(transaction=True)


def _internal(*, attempt: int | None = None, key: str | None = None, encrypted: bool = False, **context) -> dict:
    """The ``taskplane_internal`` header the relay puts on a task message (apps/outbox/messages.py)."""
    if attempt is not None:
        context["attempt"] = attempt
    return {"taskplane_internal": {"context": context, "key": key, "encrypted": encrypted},
            "taskplane": {"message_id": "m", "request_id": "req-1"}}


def test_an_application_error_is_retried_through_a_delayed_outbox_row():
    """Issue 15 §2: an application error becomes a retry row (database delay, attempt in its context)."""
    task_id = str(uuid.uuid4())
    carriers = {"flags": {"user_id": "42"}}

    result = policy_tasks.always_fails.apply(args=["a"], task_id=task_id,
                                             headers=_internal(key="order:1", carriers=carriers))

    assert result.state == states.IGNORED  # acknowledged only because the retry row was written
    row = OutboxMessage.objects.get()
    assert (row.kind, row.name, row.status, row.key, row.queue) == (
        "task", policy_tasks.ALWAYS_FAILS, "pending", "order:1", "default")
    assert json.loads(row.payload) == {"args": ["a"], "kwargs": {}}
    assert row.context == {"carriers": carriers, "attempt": 2, "origin": task_id}
    assert row.available_at > row.created_at, "the backoff lives in the row, never in a broker countdown"
    assert row.last_error == "ValueError: injected failure for a"
    assert row.headers["request_id"] == "req-1" and row.headers["message_id"] == str(row.message_id)


def test_the_last_attempt_dead_letters_a_row_that_operators_see_and_can_retry():
    """Issue 15 §2: after max_attempts the failure is a dead outbox row with its error, retryable like any other."""
    task_id = str(uuid.uuid4())

    result = policy_tasks.always_fails.apply(args=["b"], task_id=task_id,
                                             headers=_internal(attempt=3, origin="first-id"))

    assert result.state == states.IGNORED
    dead = OutboxMessage.objects.get()
    assert (dead.status, dead.attempts, dead.last_error) == ("dead", 3, "ValueError: injected failure for b")
    assert dead.context == {"origin": "first-id"}, "an operator's retry starts again at attempt 1"
    assert outbox_stats()["counts"]["dead"] == 1
    assert outbox_retry_one(message_id=dead.pk, actor=Actor.command_line()).status == "pending"


def test_a_redelivered_failure_writes_no_second_retry_row():
    """Issue 15 §2: the follow-up row is deduplicated per failed message (a redelivery after the commit)."""
    task_id = str(uuid.uuid4())
    for _ in range(2):
        assert policy_tasks.always_fails.apply(args=["c"], task_id=task_id).state == states.IGNORED

    assert OutboxMessage.objects.count() == 1


def test_a_periodic_task_drops_an_application_error():
    """Issue 15 §2: beat re-sends periodic tasks, so their failures do not pile up retry rows every tick."""
    assert policy_tasks.periodic_fails.apply().state == states.IGNORED
    assert not OutboxMessage.objects.exists()


def test_a_broker_error_hands_the_message_back_instead_of_acknowledging_it():
    """Issue 15 §2: an infrastructure error is requeued (Reject requeue=True), never acked away or counted."""
    result = policy_tasks.broker_down.apply()

    assert result.state == states.REJECTED
    assert isinstance(result.result, Reject) and result.result.requeue
    assert not OutboxMessage.objects.exists()


def test_a_failing_subscriber_retries_on_its_own_key_then_dead_letters(settings):
    """Issue 15 §2 (item 2): subscribers use the one policy; OUTBOX_SUBSCRIBER_MAX_ATTEMPTS bounds them."""
    event = {"id": str(uuid.uuid4()), "topic": PLAIN_TOPIC, "key": "order:9", "payload": {"n": 1}, "headers": {}}

    deliver_event.apply(args=[PLAIN_SUBSCRIBER, event], headers=_internal(key="order:9"))
    retry = OutboxMessage.objects.get()
    assert (retry.name, retry.key, retry.queue, retry.context["attempt"]) == (
        OUTBOX_DELIVER_EVENT, f"{PLAIN_SUBSCRIBER}:order:9", "events", 2)
    assert json.loads(retry.payload)["args"] == [PLAIN_SUBSCRIBER, event]

    deliver_event.apply(args=[PLAIN_SUBSCRIBER, event],
                        headers=_internal(attempt=deliver_event.max_attempts, key=retry.key))
    dead = OutboxMessage.objects.get(status="dead")
    assert deliver_event.max_attempts == settings.OUTBOX_SUBSCRIBER_MAX_ATTEMPTS
    assert dead.key == retry.key and dead.attempts == deliver_event.max_attempts
    assert not InboxEntry.objects.exists(), "a failed delivery leaves no inbox row"


def test_celery_autoretry_options_are_refused():
    """Issue 15 §2: no Celery autoretry or broker countdowns, even when asked for."""
    with pytest.raises(ValueError, match="outbox"):
        taskplane_task(policy_tasks.RECORD, autoretry_for=(ValueError,), max_retries=3)(lambda: None)


def test_one_message_run_by_two_workers_at_once_has_one_effect_even_when_the_first_fails(effects_failing_first):
    """Issue 15 §2 (effect_once): both sides of the inbox claim raced. The first run claims the inbox
    row and fails inside its body (rolled back with the claim); the second, waiting on that claim,
    then has the effect. The first run's retry row, run afterwards, finds the effect done."""
    task_id = str(uuid.uuid4())
    states_seen: list[tuple[str, object]] = []

    def run() -> None:
        try:
            result = policy_tasks.effect_once.apply(args=["x"], task_id=task_id)
            states_seen.append((result.state, None if result.state == states.IGNORED else result.result))
        finally:
            connection.close()

    gate = GateLock()
    threads = [threading.Thread(target=run) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        # One run waits on the gate inside its body, the other on the first one's inbox row.
        wait_until(lambda: backends_waiting_on_locks() >= 2, timeout=30, message="both runs to block")
    finally:
        gate.release()
        for thread in threads:
            thread.join(timeout=60)

    assert sorted(states_seen, key=str) == [(states.IGNORED, None), (states.SUCCESS, "effect")]
    assert effects_failing_first() == 1
    [retry] = OutboxMessage.objects.filter(name=policy_tasks.EFFECT_ONCE)
    assert retry.context == {"attempt": 2, "origin": task_id}

    # The retry of the failed run is the same logical message: it finds the effect and does nothing.
    result = policy_tasks.effect_once.apply(args=["x"], task_id=str(retry.message_id),
                                            headers=_internal(**retry.context))
    assert (result.state, result.result) == (states.SUCCESS, "duplicate")
    assert effects_failing_first() == 1
    assert InboxEntry.objects.filter(consumer=policy_tasks.EFFECT_ONCE, message_id=task_id).count() == 1
