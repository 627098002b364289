"""Sagas in given states for the control-plane tests (admin, API, command, permissions).

Rows are written through the models: these tests exercise what operators see and do, and an
instance that has reached compensation_failed takes a worker and many failed attempts to reach for
real (the engine's tests do that). ``running_saga`` starts one through the engine's saga_start.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.sagas.definitions import Step, saga
from apps.sagas.models import SagaInstance, SagaStepAttempt

NAME = "tests.control.checkout"
STEPS = ("reserve", "charge", "confirm")


def _noop(context):
    return None


DEFINITION = saga(NAME, steps=[Step("reserve", action=_noop, compensation=_noop),
                               Step("charge", action=_noop, compensation=_noop),
                               Step("confirm", action=_noop)])

State = SagaInstance.State
Kind = SagaStepAttempt.Kind
AttemptState = SagaStepAttempt.State


def instance_row(*, state: str = State.RUNNING, key: str | None = None, name: str = NAME,
                 steps: tuple[str, ...] = STEPS, definition_hash: str | None = None, **fields) -> SagaInstance:
    """An instance in ``state``, written directly (its definition hash is the declared one unless given)."""
    return SagaInstance.objects.create(
        name=name, key=key or uuid.uuid4().hex[:12], state=state, input={"order_id": 7},
        context={"order_id": 7}, definition_hash=definition_hash or DEFINITION.definition_hash,
        definition_steps=list(steps), **fields,
    )


def attempt_row(instance: SagaInstance, *, step: str, kind: str = Kind.ACTION, attempt: int = 1,
                state: str = AttemptState.SUCCEEDED, result=None, error: str = "", ran_ms: int | None = 120,
                **fields) -> SagaStepAttempt:
    """One attempt of ``step``; it started a second ago and ran ``ran_ms`` (None: not started)."""
    started = timezone.now() - timedelta(seconds=1)
    step_index = list(instance.definition_steps).index(step)
    return SagaStepAttempt.objects.create(
        instance=instance, step=step, step_index=step_index, kind=kind, attempt=attempt, state=state,
        idempotency_key=f"{instance.pk}:{step_index}:{kind}", result=result, error=error,
        started_at=started if ran_ms is not None else None,
        finished_at=started + timedelta(milliseconds=ran_ms) if ran_ms is not None else None, **fields,
    )


def failed_compensation_saga(**fields) -> SagaInstance:
    """compensation_failed: reserve succeeded, charge failed for good, reserve's compensation failed twice."""
    instance = instance_row(state=State.COMPENSATION_FAILED, step_index=0, failure="charge: card declined",
                            finished_at=timezone.now(), **fields)
    attempt_row(instance, step="reserve", result={"reservation_id": 41})
    attempt_row(instance, step="charge", state=AttemptState.FAILED, error="PaymentDeclined: card declined")
    for number in (1, 2):
        attempt_row(instance, step="reserve", kind=Kind.COMPENSATION, attempt=number, state=AttemptState.FAILED,
                    error=f"ConnectionError: stock service unreachable ({number})")
    return instance


def running_saga(key: str | None = None) -> SagaInstance:
    """A saga started through the engine (its first step dispatched through the outbox, no worker running)."""
    from apps.sagas.services import saga_start

    with transaction.atomic():
        return saga_start(NAME, key=key or uuid.uuid4().hex[:12], input={"order_id": 7})
