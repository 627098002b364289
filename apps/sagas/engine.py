"""Running one step attempt (the body of the ``sagas.run_step`` task): claim, act, complete.

1. Claim: ``UPDATE … SET state='running', token=<new> WHERE id=… AND state='scheduled' AND token IS NULL``
   with started_at and the start-to-close deadline on the database clock. A redelivered message finds
   the attempt running, finished or cancelled and does nothing.
2. Act: the step's action (or compensation) runs outside any transaction, unless the step says
   ``in_transaction`` (then inside the completion's transaction: database-only work happens once).
3. Complete, in ONE transaction: the attempt's outcome (compare-and-set on state and token, so a late
   completion of an attempt the sweeper timed out changes nothing), the instance's new context, state
   and version (compare-and-set on version), and the next attempt with its outbox dispatch.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import DateTimeField, Value
from django.db.models.functions import Least, Now

from apps.core.resilience.retry import retry_after_of
from apps.sagas import metrics
from apps.sagas.attempts import Kind, State, schedule_to_close_end
from apps.sagas.definitions import Step, StepContext, StepFunction
from apps.sagas.errors import INFRASTRUCTURE_ERRORS
from apps.sagas.flow import (
    action_failed,
    advance,
    code_step,
    compensate_next,
    compensation_failed,
    log_extra,
    step_unusable,
    with_cas_retries,
)
from apps.sagas.models import SagaInstance, SagaStepAttempt

logger = logging.getLogger(__name__)


class _Failed(Exception):
    """The step's function raised (or returned something unusable): roll back, then record the failure."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Lost(Exception):
    """The attempt is no longer ours (timed out or cancelled meanwhile): nothing may be written."""


@dataclass
class _Claim:
    attempt: SagaStepAttempt
    instance: SagaInstance
    step: Step
    token: uuid.UUID
    started: float
    transitions: int = 0

    def current_instance(self) -> SagaInstance:
        """The instance as read before the claim on the first try (its version CAS catches any change since),
        read again after a lost race."""
        self.transitions += 1
        if self.transitions > 1:
            self.instance = SagaInstance.objects.get(pk=self.instance.pk)
        return self.instance


def step_run(*, attempt_id: int) -> str:
    """Run attempt ``attempt_id`` once; returns what happened (succeeded, failed, lost, or why it did nothing)."""
    attempt = SagaStepAttempt.objects.select_related("instance").filter(pk=attempt_id).first()
    if attempt is None:
        return "unknown-attempt"
    if attempt.state != State.SCHEDULED or attempt.kind == Kind.SIGNAL:
        return f"already-{attempt.state}"  # a redelivery, or the sweeper or a cancel got there first
    instance = attempt.instance
    step = code_step(instance, attempt.step_index) if attempt.step_index < len(instance.definition_steps) else None
    if step is None:
        return _not_declared(attempt)
    claim = _claim(attempt, instance, step)
    if claim is None:
        return "already-claimed"
    try:
        function = step.action_function() if attempt.kind == Kind.ACTION else step.compensation_function()
    except Exception as exc:  # a dotted path that does not import: the attempt fails like a raising step
        outcome = with_cas_retries(_fail, claim, exc)
        _observe(claim, outcome)
        return outcome
    context = StepContext(saga_id=str(instance.pk), saga_name=instance.name, key=instance.key, step=step.name,
                          attempt=attempt.attempt, idempotency_key=attempt.idempotency_key,
                          data=copy.deepcopy(instance.context))
    logger.debug("Saga %s step %s %s attempt %d started", instance.name, step.name, attempt.kind, attempt.attempt,
                extra=log_extra(instance, step.name, kind=attempt.kind, attempt=attempt.attempt))
    try:
        if step.in_transaction:
            outcome = with_cas_retries(lambda: _complete(claim, _call(function, context), inside=True))
        else:
            result = _call(function, context)
            outcome = with_cas_retries(_complete, claim, result)
    except _Failed as failed:
        if isinstance(failed.error, INFRASTRUCTURE_ERRORS):
            _release(claim)
            raise failed.error from None
        outcome = with_cas_retries(_fail, claim, failed.error)
    except _Lost:
        outcome = "lost"
    except INFRASTRUCTURE_ERRORS:
        _release(claim)
        raise
    _observe(claim, outcome)
    return outcome


def _claim(attempt: SagaStepAttempt, instance: SagaInstance, step: Step) -> _Claim | None:
    limit = step.start_to_close_seconds
    # Without a start-to-close timeout a running attempt still ends: no task outlives its hard time limit,
    # so past it the worker is gone (killed) and the sweeper takes over.
    deadline: Any = Now() + timedelta(seconds=limit if limit is not None else settings.CELERY_TASK_TIME_LIMIT)
    close_end = schedule_to_close_end(instance, step, attempt.step_index) if attempt.kind == Kind.ACTION else None
    if close_end is not None:
        deadline = Least(deadline, Value(close_end, output_field=DateTimeField()), output_field=DateTimeField())
    token = uuid.uuid4()
    claimed = SagaStepAttempt.objects.filter(pk=attempt.pk, state=State.SCHEDULED, token__isnull=True).update(
        state=State.RUNNING, token=token, started_at=Now(), deadline_at=deadline)
    if claimed != 1:
        return None
    return _Claim(attempt=attempt, instance=instance, step=step, token=token, started=time.perf_counter())


def _call(function: StepFunction, context: StepContext) -> dict[str, Any]:
    try:
        result = function(context)
        if result is None:
            return {}
        if not isinstance(result, Mapping):
            raise TypeError(f"a step must return a dict or None, not {type(result).__name__}")
        result = dict(result)
        json.dumps(result, allow_nan=False)
    except Exception as exc:
        raise _Failed(exc) from exc
    return result


def _mine(claim: _Claim) -> Any:
    """The claimed attempt, selected only while still running under our token."""
    return SagaStepAttempt.objects.filter(pk=claim.attempt.pk, state=State.RUNNING, token=claim.token)


def _complete(claim: _Claim, result: dict[str, Any], *, inside: bool = False) -> str:
    if _mine(claim).update(state=State.SUCCEEDED, finished_at=Now(), result=result) != 1:
        if inside:
            raise _Lost()  # roll back what the action wrote in this transaction
        return "lost"
    instance = claim.current_instance()
    attempt = claim.attempt
    if attempt.kind == Kind.ACTION:
        advance(instance, index=attempt.step_index + 1, context={**instance.context, **result},
                pivot_passed=instance.pivot_passed or claim.step.pivot)
    else:
        compensate_next(instance, below=attempt.step_index)
    return "succeeded"


def _fail(claim: _Claim, error: Exception) -> str:
    text = f"{type(error).__name__}: {error}"[:4000]
    if _mine(claim).update(state=State.FAILED, finished_at=Now(), error=text) != 1:
        return "lost"
    instance = claim.current_instance()
    step, attempt = claim.step, claim.attempt
    logger.warning("Saga %s step %s %s attempt %d failed: %s", instance.name, step.name, attempt.kind,
                   attempt.attempt, text, extra=log_extra(instance, step.name, kind=attempt.kind, error=text))
    if attempt.kind == Kind.ACTION:
        permanent = isinstance(error, step.permanent)
        action_failed(instance, attempt, step, error=text, retryable=not permanent and step.retry.should_retry(error),
                      retry_after=retry_after_of(error))
    else:
        compensation_failed(instance, attempt, step, error=text)
    return "failed"


def _release(claim: _Claim) -> None:
    """Hand the attempt back (scheduled again) so the requeued message can claim it; best effort."""
    try:
        _mine(claim).update(state=State.SCHEDULED, token=None, started_at=None, deadline_at=claim.attempt.deadline_at)
    except INFRASTRUCTURE_ERRORS:
        logger.warning("Saga attempt %s stays claimed until its deadline: the database is unreachable",
                       claim.attempt.pk)


def _not_declared(attempt: SagaStepAttempt) -> str:
    """The worker's code no longer has this step: record it and move on without crashing."""

    def transition() -> str:
        if SagaStepAttempt.objects.filter(pk=attempt.pk, state=State.SCHEDULED, token__isnull=True).update(
                state=State.CANCELLED, finished_at=Now()) != 1:
            return "already-claimed"
        instance = SagaInstance.objects.get(pk=attempt.instance_id)
        step_unusable(instance, index=attempt.step_index, kind=attempt.kind)
        return "not-declared"

    return with_cas_retries(transition)


def _observe(claim: _Claim, outcome: str) -> None:
    seconds = time.perf_counter() - claim.started
    metrics.observe_step(saga=claim.instance.name, step=claim.step.name, kind=claim.attempt.kind, outcome=outcome,
                         seconds=seconds)
    logger.info("Saga %s step %s %s attempt %d %s in %.1f ms", claim.instance.name, claim.step.name,
                claim.attempt.kind, claim.attempt.attempt, outcome, seconds * 1000,
                extra=log_extra(claim.instance, claim.step.name, kind=claim.attempt.kind, outcome=outcome))
