"""The sweeper (``sagas.sweep``, every SAGAS_SWEEP_SECONDS): nothing is left stuck.

- Attempts past their deadline (schedule-to-start, start-to-close, schedule-to-close, a signal's
  timeout) are timed out, by compare-and-set on the state and token read, and retried or failed.
  A worker killed mid-step leaves its attempt running until that deadline; then it is retried.
- Scheduled attempts still not started SAGAS_STEP_LOST_SECONDS after they were due, whose dispatch
  already left the outbox (the broker lost it), are dispatched again: a new outbox row. The claim's
  compare-and-set still lets only one of the messages run the step.
- Running sagas past their own deadline stop and compensate (before the pivot only).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from apps.core.task_contract import SAGAS_RUN_STEP
from apps.outbox import enqueue
from apps.outbox.models import OutboxMessage
from apps.sagas.attempts import OPEN_STATES, Kind, State
from apps.sagas.flow import (
    action_failed,
    begin_compensation,
    code_step,
    compensation_failed,
    log_extra,
    open_attempt,
    step_unusable,
    wait_timed_out,
    with_cas_retries,
)
from apps.sagas.models import SagaInstance, SagaStepAttempt

logger = logging.getLogger(__name__)
BATCH = 200  # per kind of work and sweep; the next sweep takes the rest


def saga_sweep(*, batch: int = BATCH) -> dict[str, int]:
    """One sweep: time out expired attempts, re-dispatch lost ones, stop sagas past their deadline."""
    expired = list(SagaStepAttempt.objects.filter(state__in=OPEN_STATES, deadline_at__lt=Now())
                   .order_by("deadline_at").values_list("pk", flat=True)[:batch])
    timed_out = sum(with_cas_retries(_time_out, attempt_id) for attempt_id in expired)
    lost_before = Now() - timedelta(seconds=settings.SAGAS_STEP_LOST_SECONDS)
    candidates = list(SagaStepAttempt.objects.filter(state=State.SCHEDULED, scheduled_at__lt=lost_before)
                      .order_by("scheduled_at").values_list("pk", "task_id")[:batch])
    lost = _lost(candidates)
    redispatched = sum(with_cas_retries(_redispatch, attempt_id, task_id) for attempt_id, task_id in lost)
    overdue = list(SagaInstance.objects.filter(state=SagaInstance.State.RUNNING, pivot_passed=False,
                                               deadline_at__lt=Now()).values_list("pk", flat=True)[:batch])
    stopped = sum(with_cas_retries(_deadline_passed, saga_id) for saga_id in overdue)
    counts = {"timed_out": timed_out, "redispatched": redispatched, "deadline_passed": stopped}
    if any(counts.values()):
        logger.info("Saga sweep: %s", counts, extra=counts)
    return counts


def _time_out(attempt_id: int) -> bool:
    attempt = SagaStepAttempt.objects.filter(pk=attempt_id, state__in=OPEN_STATES).first()
    if attempt is None:
        return False
    was = attempt.state
    error = f"timed out while {was}: its deadline {attempt.deadline_at:%Y-%m-%d %H:%M:%S.%f}Z passed"
    # Everything read is compared: a completion that won the race, or a new claim, keeps the attempt.
    if SagaStepAttempt.objects.filter(pk=attempt_id, state=was, token=attempt.token, deadline_at=attempt.deadline_at,
                                      deadline_at__lt=Now()).update(
            state=State.TIMED_OUT, finished_at=Now(), error=error) != 1:
        return False
    instance = SagaInstance.objects.get(pk=attempt.instance_id)
    logger.warning("Saga %s step %s %s attempt %d %s", instance.name, attempt.step, attempt.kind, attempt.attempt,
                   error, extra=log_extra(instance, attempt.step, kind=attempt.kind, outcome="timed_out"))
    step = code_step(instance, attempt.step_index)
    if step is None:
        step_unusable(instance, index=attempt.step_index, kind=attempt.kind)
    elif attempt.kind == Kind.ACTION:
        action_failed(instance, attempt, step, error=error, retryable=True)
    elif attempt.kind == Kind.COMPENSATION:
        compensation_failed(instance, attempt, step, error=error)
    else:
        wait_timed_out(instance, attempt, step)
    return True


def _lost(candidates: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The candidates whose dispatch left the outbox long enough ago (or is gone): the broker lost them."""
    if not candidates:
        return []
    ids = [task_id for _, task_id in candidates if task_id]
    recent = Now() - timedelta(seconds=settings.SAGAS_STEP_LOST_SECONDS)
    # A dispatch still pending (the relay is behind or down) is not lost; neither is one relayed recently.
    in_flight = {str(message_id) for message_id in OutboxMessage.objects.filter(message_id__in=ids).exclude(
        status=OutboxMessage.Status.PUBLISHED, available_at__lt=recent).values_list("message_id", flat=True)}
    return [(attempt_id, task_id) for attempt_id, task_id in candidates if task_id not in in_flight]


def _redispatch(attempt_id: int, task_id: str) -> bool:
    attempt = SagaStepAttempt.objects.filter(pk=attempt_id, state=State.SCHEDULED, task_id=task_id).first()
    if attempt is None:
        return False
    old = attempt.task_id
    message = enqueue(SAGAS_RUN_STEP, args=[attempt_id], dedup_key=f"sagas.redispatch:{attempt_id}:{old}")
    attempt.task_id = str(message.message_id)
    if SagaStepAttempt.objects.filter(pk=attempt_id, state=State.SCHEDULED, task_id=old).update(
            task_id=attempt.task_id) != 1:
        transaction.set_rollback(True)  # it started, or another sweeper re-dispatched it: keep nothing
        return False
    logger.warning("Saga step %s attempt %d was lost by the broker (dispatch %s); dispatched again as %s",
                   attempt.step, attempt.attempt, old, attempt.task_id,
                   extra={"saga_id": str(attempt.instance_id), "step": attempt.step})
    return True


def _deadline_passed(saga_id: Any) -> bool:
    instance = SagaInstance.objects.filter(pk=saga_id, state=SagaInstance.State.RUNNING, pivot_passed=False,
                                           deadline_at__lt=Now()).first()
    if instance is None:
        return False
    current = open_attempt(instance)
    if current is not None and current.state == State.RUNNING:
        # It may have acted already: timed out, it is compensated with the steps before it.
        if SagaStepAttempt.objects.filter(pk=current.pk, state=State.RUNNING, token=current.token).update(
                state=State.TIMED_OUT, finished_at=Now(), error="the saga's deadline passed") != 1:
            return False
    begin_compensation(instance, below=instance.step_index + 1,
                       failure=f"the saga's deadline {instance.deadline_at:%Y-%m-%d %H:%M:%S}Z passed")
    return True
