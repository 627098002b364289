"""Writing attempt rows: a scheduled step and its outbox dispatch, a signal wait, a skipped or failed record.

Everything here runs inside the caller's transaction, so an attempt and its dispatch commit together
with the transition that caused them (or not at all).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import DateTimeField, Value
from django.db.models.functions import Least, Now
from django.utils import timezone

from apps.core.task_contract import SAGAS_RUN_STEP
from apps.outbox import enqueue
from apps.sagas.definitions import Step
from apps.sagas.models import SagaInstance, SagaSignal, SagaStepAttempt

Attempt = SagaStepAttempt
Kind = SagaStepAttempt.Kind
State = SagaStepAttempt.State
OPEN_STATES = (State.SCHEDULED, State.RUNNING, State.WAITING)


def idempotency_key(instance: SagaInstance, step_name: str, kind: str) -> str:
    """The key every attempt of this step's action (or compensation, or wait) shares."""
    return f"{instance.pk}:{step_name}" if kind == Kind.ACTION else f"{instance.pk}:{step_name}:{kind}"


def db_now() -> datetime:
    """The database's current time (every lease and deadline is measured on it)."""
    if connection.vendor != "postgresql":
        return timezone.now()  # SQLite's now() is this machine's clock anyway
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")  # what Django's Now() reads
        return cursor.fetchone()[0]


def schedule_to_close_end(instance: SagaInstance, step: Step, index: int) -> datetime | None:
    """When all attempts of this step's action together run out of time (None: no such limit, or attempt 1)."""
    if step.schedule_to_close_seconds is None:
        return None
    first = (Attempt.objects.filter(instance=instance, step_index=index, kind=Kind.ACTION, attempt=1)
             .values_list("scheduled_at", flat=True).first())
    return None if first is None else first + timedelta(seconds=step.schedule_to_close_seconds)


def schedule_attempt(instance: SagaInstance, step: Step, index: int, *, kind: str, attempt: int,
                     budget_attempt: int | None = None, delay: float = 0.0) -> SagaStepAttempt:
    """Write a scheduled attempt due ``delay`` seconds from now and the outbox row that dispatches it."""
    wait = timedelta(seconds=max(0.0, delay))
    deadline: Any = None
    if step.schedule_to_start_seconds is not None:
        deadline = Now() + (wait + timedelta(seconds=step.schedule_to_start_seconds))
    if kind == Kind.ACTION and step.schedule_to_close_seconds is not None:
        close_end = schedule_to_close_end(instance, step, index)
        close: Any = (Now() + (wait + timedelta(seconds=step.schedule_to_close_seconds)) if close_end is None
                      else Value(close_end, output_field=DateTimeField()))
        deadline = close if deadline is None else Least(deadline, close, output_field=DateTimeField())
    row = Attempt.objects.create(
        instance=instance, step=step.name, step_index=index, kind=kind, attempt=attempt,
        budget_attempt=budget_attempt or attempt, idempotency_key=idempotency_key(instance, step.name, kind),
        scheduled_at=Now() + wait, deadline_at=deadline,
    )
    dispatch(row, delay=wait.total_seconds(), dedup_key=f"sagas.run:{row.pk}")
    return row


def dispatch(row: SagaStepAttempt, *, delay: float, dedup_key: str) -> str:
    """Write the outbox row that runs ``row`` (due ``delay`` seconds from now); returns its message id."""
    message = enqueue(SAGAS_RUN_STEP, args=[row.pk], delay=delay, dedup_key=dedup_key)
    row.task_id = str(message.message_id)
    Attempt.objects.filter(pk=row.pk).update(task_id=row.task_id)
    return row.task_id


def record_attempt(instance: SagaInstance, step_name: str, index: int, *, kind: str, state: str, attempt: int = 1,
                   error: str = "") -> SagaStepAttempt:
    """Write an attempt that is already over: a skipped step, or a step the code no longer declares."""
    return Attempt.objects.create(
        instance=instance, step=step_name, step_index=index, kind=kind, attempt=attempt, state=state,
        idempotency_key=idempotency_key(instance, step_name, kind), finished_at=Now(), error=error,
    )


def next_attempt_number(instance: SagaInstance, index: int, kind: str) -> int:
    """One more than the highest attempt number of this step and kind so far."""
    last = (Attempt.objects.filter(instance=instance, step_index=index, kind=kind).order_by("-attempt")
            .values_list("attempt", flat=True).first())
    return (last or 0) + 1


def signal_lock(topic: str, key: str) -> None:
    """Serialise a wait beginning and a signal arriving for one (topic, key), so neither misses the other."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 9))",
                           ["sagas.signal " + json.dumps([topic, key])])
    # SQLite runs one writer at a time, which gives the same guarantee.


def wait_begin(instance: SagaInstance, step: Step, index: int, context: dict[str, Any], *,
               attempt: int = 1) -> dict[str, Any] | None:
    """Start waiting for the step's signal; a signal that arrived earlier completes the wait at once.

    Returns the payload of that earlier signal (to merge into the context), or None while waiting.
    """
    signal = step.signal
    key = signal.key(dict(context)) if signal.key is not None else instance.key
    key = str(key)[:200]
    signal_lock(signal.topic, key)
    stored = SagaSignal.objects.filter(topic=signal.topic, key=key, consumed_by__isnull=True).order_by("id").first()
    common = {"instance": instance, "step": step.name, "step_index": index, "kind": Kind.SIGNAL, "attempt": attempt,
              "budget_attempt": attempt, "idempotency_key": idempotency_key(instance, step.name, Kind.SIGNAL),
              "signal_topic": signal.topic, "signal_key": key, "started_at": Now()}
    if stored is None:
        Attempt.objects.create(**common, state=State.WAITING,
                               deadline_at=Now() + timedelta(seconds=signal.timeout_seconds))
        return None
    payload = stored.payload if isinstance(stored.payload, dict) else {}
    row = Attempt.objects.create(**common, state=State.SUCCEEDED, finished_at=Now(), result=payload)
    SagaSignal.objects.filter(pk=stored.pk, consumed_by__isnull=True).update(consumed_by=row)
    return payload
