"""Signals: outbox events that complete a step's wait, matched by (topic, key).

For every topic some declared Signal waits on, an outbox subscriber ``sagas.signal:<topic>`` is
registered. It runs in the subscriber's inbox transaction (so each event acts once): every attempt
waiting on (topic, event key) completes with the event's payload merged into its saga's context; with
no wait begun yet the event is kept as a SagaSignal, which the next wait on that (topic, key) consumes.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.functions import Now

from apps.outbox import subscriber
from apps.outbox.registry import subscriber_named
from apps.sagas.attempts import State, signal_lock
from apps.sagas.definitions import declared_sagas
from apps.sagas.flow import log_extra, wait_completed, with_cas_retries
from apps.sagas.models import SagaInstance, SagaSignal, SagaStepAttempt

logger = logging.getLogger(__name__)
SUBSCRIBER_PREFIX = "sagas.signal:"


def signal_subscribers_register() -> list[str]:
    """Register the signal subscriber of every topic a declared saga waits on (idempotent); returns their names."""
    names = []
    for definition in declared_sagas().values():
        for step in definition.steps:
            if step.signal is None:
                continue
            name = f"{SUBSCRIBER_PREFIX}{step.signal.topic}"[:200]
            if subscriber_named(name) is None:
                subscriber(step.signal.topic, name=name)(signal_receive)
            names.append(name)
    return sorted(set(names))


def signal_receive(event: dict[str, Any]) -> None:
    """Complete the waits on this event's (topic, key), or keep it for a wait not yet begun."""
    topic, key = event["topic"], str(event.get("key") or "")[:200]
    payload = event.get("payload")
    payload = payload if isinstance(payload, dict) else {"signal": payload}
    signal_lock(topic, key)
    waiting = list(SagaStepAttempt.objects.filter(state=State.WAITING, signal_topic=topic, signal_key=key)
                   .order_by("id").values_list("pk", flat=True))
    completed = [attempt_id for attempt_id in waiting if with_cas_retries(_complete, attempt_id, payload)]
    SagaSignal.objects.get_or_create(
        event_id=event["id"],
        defaults={"topic": topic, "key": key, "payload": payload,
                  "consumed_by_id": completed[0] if completed else None})
    logger.info("Signal %s %s completed %d wait(s)", topic, key, len(completed),
                extra={"signal_topic": topic, "signal_key": key, "completed": len(completed)})


def _complete(attempt_id: int, payload: dict[str, Any]) -> bool:
    attempt = SagaStepAttempt.objects.filter(pk=attempt_id, state=State.WAITING).first()
    if attempt is None:
        return False
    if SagaStepAttempt.objects.filter(pk=attempt_id, state=State.WAITING).update(
            state=State.SUCCEEDED, finished_at=Now(), result=payload) != 1:
        return False
    instance = SagaInstance.objects.get(pk=attempt.instance_id)
    logger.info("Saga %s step %s received its signal", instance.name, attempt.step,
                extra=log_extra(instance, attempt.step))
    wait_completed(instance, attempt, payload)
    return True
