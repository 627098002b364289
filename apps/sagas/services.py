"""Saga writes: start (in the caller's transaction), and the operator's cancel, retry and resolve (audited)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models.functions import Now

from apps.core.audit import Actor, operator_action_record
from apps.core.errors import Conflict, InvalidInput
from apps.sagas import metrics
from apps.sagas.attempts import Kind, State, db_now, next_attempt_number, schedule_attempt
from apps.sagas.definitions import saga_definition
from apps.sagas.errors import SagaUsageError
from apps.sagas.flow import advance as _advance
from apps.sagas.flow import (
    begin_compensation,
    code_step,
    log_extra,
    notify_end,
    open_attempt,
    save_instance,
    with_cas_retries,
)
from apps.sagas.models import SagaInstance, SagaStepAttempt
from apps.sagas.selectors import saga_get

logger = logging.getLogger(__name__)
Saga = SagaInstance.State
TARGET_TYPE = "sagas.sagainstance"
ENDED = (Saga.COMPLETED, Saga.COMPENSATED, Saga.CANCELLED, Saga.COMPENSATION_FAILED)


def _field_error(field: str, message: str, code: str = "invalid") -> list[dict[str, str]]:
    return [{"field": field, "message": message, "code": code}]


def saga_start(name: str, *, key: str, input: dict[str, Any]) -> SagaInstance:  # noqa: A002 - the contract's name
    """Start saga ``name`` for ``key`` in the caller's transaction; the same (name, key) returns the existing one."""
    if not connection.in_atomic_block:
        raise SagaUsageError("saga_start() must run inside transaction.atomic(), so the saga starts with your writes.")
    definition = saga_definition(name)
    if definition is None:
        raise InvalidInput(f"Unknown saga {name!r}.", errors=_field_error("name", f"No saga named {name!r}."))
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise InvalidInput("A saga key is a string of 1 to 200 characters.",
                           errors=_field_error("key", "1 to 200 characters."))
    if not isinstance(input, dict):
        raise InvalidInput("A saga's input is a JSON object.", errors=_field_error("input", "Must be an object."))
    try:
        json.dumps(input, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"A saga's input must be JSON: {exc}", errors=_field_error("input", str(exc))) from exc
    deadline = (db_now() + timedelta(seconds=definition.deadline_seconds)
                if definition.deadline_seconds is not None else None)
    candidate = SagaInstance(id=uuid.uuid4(), name=name, key=key, input=input, context=dict(input),
                             definition_hash=definition.definition_hash, definition_steps=definition.step_names,
                             deadline_at=deadline)
    # ON CONFLICT DO NOTHING: a concurrent start of the same (name, key) waits for the first to commit,
    # then inserts nothing and reads the winner's row; no error breaks the caller's transaction.
    SagaInstance.objects.bulk_create([candidate], ignore_conflicts=True)
    instance = SagaInstance.objects.get(name=name, key=key)
    if instance.pk != candidate.pk:
        return instance
    with transaction.atomic():
        _advance(instance, index=0, context=instance.context)
    metrics.count_started(name)
    logger.info("Saga %s %s started for %s", name, instance.pk, key, extra=log_extra(instance))
    return instance


def _audit(instance: SagaInstance, *, actor: Actor, action: str, reason: str, **details: Any) -> None:
    operator_action_record(actor=actor, action=action, target_type=TARGET_TYPE, target_ids=[instance.pk],
                           reason=reason, details={"saga": instance.name, "key": instance.key, **details})


def saga_cancel(*, saga_id: Any, actor: Actor, reason: str) -> SagaInstance:
    """Compensate now, ending ``cancelled``; a step in flight finishes first and is compensated too."""

    def transition() -> SagaInstance:
        instance = saga_get(saga_id=saga_id)
        if instance.state != Saga.RUNNING or instance.cancel_requested:
            state = "already being cancelled" if instance.cancel_requested else instance.state
            raise Conflict(f"Saga {instance.pk} is {state}: only a running saga can be cancelled.")
        if instance.pivot_passed:
            raise Conflict(f"Saga {instance.pk} passed its pivot step: it can only move forward.")
        failure = f"cancelled by {actor.name}: {reason}".strip().rstrip(":")
        current = open_attempt(instance)
        if current is not None and current.state == State.RUNNING:
            # The step finishes first; its completion sees the request and compensates it with the others.
            save_instance(instance, cancel_requested=True, failure=failure)
        else:
            instance.cancel_requested = True
            begin_compensation(instance, below=instance.step_index + 1, failure=failure, cancel_requested=True)
        _audit(instance, actor=actor, action="saga.cancel", reason=reason)
        return instance

    instance = with_cas_retries(transition)
    logger.info("Saga %s %s cancel requested by %s", instance.name, instance.pk, actor.name,
                extra=log_extra(instance, actor=actor.name))
    return instance


def saga_retry(*, saga_id: Any, actor: Actor, reason: str) -> SagaInstance:
    """Dispatch a compensation_failed saga's failed step again, with a fresh attempt budget."""

    def transition() -> SagaInstance:
        instance = saga_get(saga_id=saga_id)
        if instance.state != Saga.COMPENSATION_FAILED:
            raise Conflict(f"Saga {instance.pk} is {instance.state}: only compensation_failed sagas are retried.")
        index = instance.step_index
        last = SagaStepAttempt.objects.filter(instance=instance, step_index=index).order_by("-id").first()
        kind = last.kind if last is not None and last.kind == Kind.ACTION else Kind.COMPENSATION
        step = code_step(instance, index)
        if step is None:
            raise Conflict(f"Step {instance.definition_steps[index]!r} is still not declared in the code: "
                           "restore it, or resolve the saga by hand.")
        number = next_attempt_number(instance, index, kind)
        if kind == Kind.ACTION:  # a forward step past the pivot: go on as the saga would have
            _advance(instance, index=index, context=instance.context, attempt=number, state=Saga.RUNNING,
                     finished_at=None)
        else:
            schedule_attempt(instance, step, index, kind=kind, attempt=number, budget_attempt=1)
            save_instance(instance, state=Saga.COMPENSATING, finished_at=None)
        _audit(instance, actor=actor, action="saga.retry", reason=reason, step=step.name, kind=kind)
        return instance

    instance = with_cas_retries(transition)
    logger.info("Saga %s %s retried by %s", instance.name, instance.pk, actor.name,
                extra=log_extra(instance, actor=actor.name))
    return instance


def saga_resolve(*, saga_id: Any, actor: Actor, note: str) -> SagaInstance:
    """Mark a compensation_failed saga compensated: an operator fixed it by hand (``note`` says how)."""
    if not isinstance(note, str) or not note.strip():
        raise InvalidInput("A note is required to resolve a saga.",
                           errors=_field_error("note", "This field is required.", "required"))

    def transition() -> SagaInstance:
        instance = saga_get(saga_id=saga_id)
        if instance.state != Saga.COMPENSATION_FAILED:
            raise Conflict(f"Saga {instance.pk} is {instance.state}: only compensation_failed sagas are resolved.")
        save_instance(instance, state=Saga.COMPENSATED, resolution_note=note.strip(), finished_at=Now())
        notify_end(instance)
        _audit(instance, actor=actor, action="saga.resolve", reason=note.strip())
        return instance

    instance = with_cas_retries(transition)
    logger.info("Saga %s %s resolved by %s", instance.name, instance.pk, actor.name,
                extra=log_extra(instance, actor=actor.name))
    return instance
