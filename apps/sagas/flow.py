"""Saga transitions, each inside the caller's transaction: move forward, retry, compensate, finish.

Every transition ends with one compare-and-set of the instance (``UPDATE … WHERE version = <read>``,
rowcount checked); a lost race raises VersionConflict, the caller rolls its transaction back and tries
again on fresh rows. Attempt rows are written (and locked) before the instance row: the engine's one
lock order, so transitions never deadlock each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.expressions import BaseExpression
from django.db.models.functions import Now

from apps.sagas import metrics
from apps.sagas.attempts import (
    OPEN_STATES,
    Kind,
    State,
    db_now,
    next_attempt_number,
    record_attempt,
    schedule_attempt,
    schedule_to_close_end,
    wait_begin,
)
from apps.sagas.definitions import Step, saga_definition
from apps.sagas.errors import VersionConflict
from apps.sagas.models import SagaInstance, SagaStepAttempt

logger = logging.getLogger(__name__)
Saga = SagaInstance.State
T = TypeVar("T")
CAS_TRIES = 20  # transitions of one instance racing each other; each lost race re-reads and goes again
PAST_PIVOT_MAX_RETRY_NUMBER = 16  # past the pivot retries never stop: the backoff stops growing (policy max_delay)


def with_cas_retries(transition: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``transition(*args, **kwargs)`` in a transaction (a savepoint inside one), again after a lost race."""
    for attempt in range(CAS_TRIES):
        try:
            with transaction.atomic():
                return transition(*args, **kwargs)
        except VersionConflict:
            if attempt == CAS_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def save_instance(instance: SagaInstance, **changes: Any) -> None:
    """Apply ``changes`` if the instance is still at the version read; raises VersionConflict otherwise."""
    rows = SagaInstance.objects.filter(pk=instance.pk, version=instance.version).update(
        version=F("version") + 1, updated_at=Now(), **changes)
    if rows != 1:
        raise VersionConflict(f"saga {instance.pk} moved past version {instance.version}")
    instance.version += 1
    for name, value in changes.items():
        if not isinstance(value, BaseExpression):
            setattr(instance, name, value)


def code_step(instance: SagaInstance, index: int) -> Step | None:
    """The code's current declaration of the instance's recorded step ``index`` (None: no longer declared)."""
    definition = saga_definition(instance.name)
    return definition.step_named(instance.definition_steps[index]) if definition is not None else None


def log_extra(instance: SagaInstance, step: str = "", **more: Any) -> dict[str, Any]:
    """The structured fields of every saga log line: saga id, saga name, step."""
    return {"saga_id": str(instance.pk), "saga": instance.name, "saga_key": instance.key, "step": step, **more}


def advance(instance: SagaInstance, *, index: int, context: dict[str, Any], attempt: int = 1,
            **changes: Any) -> None:
    """Move forward to the first step at or after ``index`` that runs (or complete the saga).

    ``attempt`` numbers the attempt written for the step at ``index`` (an operator's retry continues
    after the attempts it already has); later steps start at 1.
    """
    if instance.cancel_requested:
        if changes.get("pivot_passed") and not instance.pivot_passed:
            # The pivot succeeded while the cancel waited for it: the saga can no longer compensate.
            logger.warning("Saga %s: cancel ignored, the pivot step succeeded first", instance.pk,
                           extra=log_extra(instance))
            changes.update(cancel_requested=False, failure="")
        elif not instance.pivot_passed:
            begin_compensation(instance, below=index, failure=instance.failure, context=context, **changes)
            return
    steps, start = instance.definition_steps, index
    while index < len(steps):
        number = attempt if index == start else 1
        step = code_step(instance, index)
        if step is None:
            step_unusable(instance, index=index, kind=Kind.ACTION, context=context, **changes)
            return
        try:
            skip = step.when is not None and not step.when(dict(context))
            payload = wait_begin(instance, step, index, context, attempt=number) if step.signal and not skip else None
        except Exception as exc:  # the step author's predicate or signal key: the step cannot run
            step_unusable(instance, index=index, kind=Kind.ACTION, problem=f"{type(exc).__name__}: {exc}",
                          context=context, **changes)
            return
        if skip:
            record_attempt(instance, step.name, index, kind=Kind.ACTION, state=State.SKIPPED, attempt=number)
            index += 1
            continue
        if step.signal is not None:
            if payload is None:
                break
            context = {**context, **payload}
            index += 1
            continue
        schedule_attempt(instance, step, index, kind=Kind.ACTION, attempt=number)
        break
    else:
        finish(instance, Saga.COMPLETED, step_index=index, context=context, **changes)
        return
    save_instance(instance, step_index=index, context=context, **changes)


def finish(instance: SagaInstance, state: str, **changes: Any) -> None:
    """End the instance in ``state`` (terminal, or compensation_failed waiting for an operator)."""
    changes = {name: value for name, value in changes.items() if name not in ("state", "finished_at")}
    save_instance(instance, state=state, finished_at=Now(), **changes)
    notify_end(instance)
    metrics.count_ending(instance.name, state)
    log = logger.warning if state == Saga.COMPENSATION_FAILED else logger.info
    log("Saga %s %s %s", instance.name, instance.pk, state, extra=log_extra(instance, outcome=state))


def notify_end(instance: SagaInstance) -> None:
    """Run the saga's ``on_end`` hook (if declared) in the transaction that ended the instance."""
    definition = saga_definition(instance.name)
    if definition is not None and definition.on_end is not None:
        definition.on_end(instance)


def cancel_open_attempts(instance: SagaInstance) -> int:
    """Mark the instance's scheduled or waiting attempts cancelled (a running one is left to finish)."""
    return SagaStepAttempt.objects.filter(instance=instance, state__in=[State.SCHEDULED, State.WAITING]).update(
        state=State.CANCELLED, finished_at=Now())


def begin_compensation(instance: SagaInstance, *, below: int, failure: str, **changes: Any) -> None:
    """Stop going forward and compensate every step before ``below`` that succeeded (or may have run)."""
    cancel_open_attempts(instance)
    logger.info("Saga %s %s compensates: %s", instance.name, instance.pk, failure,
                extra=log_extra(instance, outcome="compensating"))
    compensate_next(instance, below=below, state=Saga.COMPENSATING, failure=failure[:4000], **changes)


def steps_to_compensate(instance: SagaInstance, *, below: int) -> list[int]:
    """Indexes before ``below`` whose action succeeded or timed out while running, last first."""
    ran = SagaStepAttempt.objects.filter(instance=instance, kind=Kind.ACTION, step_index__lt=below).filter(
        Q(state=State.SUCCEEDED) | Q(state=State.TIMED_OUT, started_at__isnull=False))
    return sorted(set(ran.values_list("step_index", flat=True)), reverse=True)


def compensate_next(instance: SagaInstance, *, below: int, **changes: Any) -> None:
    """Dispatch the compensation of the last step before ``below`` that has one, or end compensated/cancelled."""
    for index in steps_to_compensate(instance, below=below):
        step = code_step(instance, index)
        if step is None:
            step_unusable(instance, index=index, kind=Kind.COMPENSATION, **changes)
            return
        if step.compensation is None:
            continue
        schedule_attempt(instance, step, index, kind=Kind.COMPENSATION,
                         attempt=next_attempt_number(instance, index, Kind.COMPENSATION), budget_attempt=1)
        save_instance(instance, step_index=index, **changes)
        return
    changes.pop("state", None)
    finish(instance, Saga.CANCELLED if instance.cancel_requested else Saga.COMPENSATED, **changes)


def step_unusable(instance: SagaInstance, *, index: int, kind: str, problem: str = "", **changes: Any) -> None:
    """The recorded step cannot run (gone from the code, or its condition raised): compensate if still
    allowed, else wait for an operator (compensation_failed)."""
    name = instance.definition_steps[index]
    error = (f"step {name!r} cannot run: {problem}" if problem
             else f"step {name!r} is no longer declared in saga {instance.name!r} (the code changed)")
    record_attempt(instance, name, index, kind=kind, state=State.FAILED, error=error[:4000],
                   attempt=next_attempt_number(instance, index, kind))
    logger.error("Saga %s %s: %s", instance.name, instance.pk, error, extra=log_extra(instance, name))
    earlier_failure = changes.pop("failure", instance.failure)
    changes.pop("state", None)
    if kind == Kind.ACTION and not instance.pivot_passed and not changes.get("pivot_passed"):
        begin_compensation(instance, below=index, failure=error, **changes)
        return
    what = "cannot go forward past the pivot" if kind == Kind.ACTION else "cannot compensate it"
    failure = f"{earlier_failure}\n{error}: {what}; fix the code and retry, or resolve by hand"
    finish(instance, Saga.COMPENSATION_FAILED, step_index=index, failure=failure.strip()[:4000], **changes)


def action_failed(instance: SagaInstance, attempt: SagaStepAttempt, step: Step, *, error: str, retryable: bool,
                  retry_after: float = 0.0) -> None:
    """An action attempt failed or timed out (already recorded): retry it, or compensate."""
    number = attempt.attempt
    if instance.pivot_passed:  # forward only: this step is retried until it succeeds
        delay = max(step.retry.backoff(min(number - 1, PAST_PIVOT_MAX_RETRY_NUMBER)), retry_after)
        schedule_attempt(instance, step, attempt.step_index, kind=Kind.ACTION, attempt=number + 1, delay=delay)
        save_instance(instance)
        return
    if retryable and not instance.cancel_requested and number < step.retry.max_attempts:
        delay = max(step.retry.backoff(number - 1), retry_after)
        close_end = schedule_to_close_end(instance, step, attempt.step_index)
        if close_end is None or (db_now().timestamp() + delay) < close_end.timestamp():
            schedule_attempt(instance, step, attempt.step_index, kind=Kind.ACTION, attempt=number + 1, delay=delay)
            save_instance(instance)
            return
        error = f"{error} (schedule-to-close: no time left for another attempt)"
    failure = instance.failure if instance.cancel_requested else f"step {step.name!r} failed: {error}"
    begin_compensation(instance, below=attempt.step_index + 1, failure=failure)


def compensation_failed(instance: SagaInstance, attempt: SagaStepAttempt, step: Step, *, error: str) -> None:
    """A compensation attempt failed or timed out: retry it within its budget, then wait for an operator."""
    if attempt.budget_attempt < settings.SAGAS_COMPENSATION_MAX_ATTEMPTS:
        schedule_attempt(instance, step, attempt.step_index, kind=Kind.COMPENSATION, attempt=attempt.attempt + 1,
                         budget_attempt=attempt.budget_attempt + 1,
                         delay=step.retry.backoff(attempt.budget_attempt - 1))
        save_instance(instance)
        return
    finish(instance, Saga.COMPENSATION_FAILED,
           failure=f"{instance.failure}\ncompensation of step {step.name!r} failed {attempt.budget_attempt} times: "
                   f"{error}".strip()[:4000])


def wait_completed(instance: SagaInstance, attempt: SagaStepAttempt, payload: dict[str, Any]) -> None:
    """A signal completed the wait (already recorded): merge its payload and go on."""
    advance(instance, index=attempt.step_index + 1, context={**instance.context, **payload})


def wait_timed_out(instance: SagaInstance, attempt: SagaStepAttempt, step: Step) -> None:
    """The signal did not come in time: compensate, or past the pivot wait again."""
    if instance.pivot_passed:
        payload = wait_begin(instance, step, attempt.step_index, instance.context, attempt=attempt.attempt + 1)
        if payload is None:
            save_instance(instance)
        else:
            advance(instance, index=attempt.step_index + 1, context={**instance.context, **payload})
        return
    begin_compensation(instance, below=attempt.step_index,
                       failure=f"signal {step.signal.topic!r} for step {step.name!r} did not arrive within "
                               f"{step.signal.timeout_seconds:g}s")


def open_attempt(instance: SagaInstance) -> SagaStepAttempt | None:
    """The instance's attempt that is scheduled, running or waiting (at most one), if any."""
    return SagaStepAttempt.objects.filter(instance=instance, state__in=OPEN_STATES).order_by("-id").first()
