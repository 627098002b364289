"""Saga reads: one instance, filtered lists, an instance's timeline, and how its definition compares to the code."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from apps.core.errors import InvalidInput, NotFound
from apps.sagas.definitions import saga_definition
from apps.sagas.models import SagaInstance, SagaStepAttempt


def saga_get(*, saga_id: Any) -> SagaInstance:
    """The saga instance ``saga_id`` (NotFound when there is none, or the id is malformed)."""
    try:
        pk = uuid.UUID(str(saga_id))
    except ValueError:
        raise NotFound(f"No saga {saga_id}.") from None
    instance = SagaInstance.objects.filter(pk=pk).first()
    if instance is None:
        raise NotFound(f"No saga {saga_id}.")
    return instance


def saga_list(*, name: str | None = None, state: str | None = None, key: str | None = None,
              created_before: datetime | None = None, created_after: datetime | None = None) -> QuerySet[SagaInstance]:
    """Instances matching every filter given, newest first."""
    instances = SagaInstance.objects.all()
    if state is not None:
        if state not in SagaInstance.State.values:
            raise InvalidInput(f"Unknown saga state {state!r}.", errors=[
                {"field": "state", "message": f"One of {', '.join(SagaInstance.State.values)}.", "code": "invalid"}])
        instances = instances.filter(state=state)
    if name is not None:
        instances = instances.filter(name=name)
    if key is not None:
        instances = instances.filter(key=key)
    if created_before is not None:
        instances = instances.filter(created_at__lt=created_before)
    if created_after is not None:
        instances = instances.filter(created_at__gte=created_after)
    return instances.order_by("-created_at", "-id")


def saga_timeline(*, saga_id: Any) -> list[SagaStepAttempt]:
    """Every attempt of the saga's steps, compensations and waits, in the order they were written."""
    instance = saga_get(saga_id=saga_id)
    return list(SagaStepAttempt.objects.filter(instance=instance).order_by("id"))


def saga_definition_status(instance: SagaInstance) -> dict[str, Any]:
    """Whether the instance's recorded definition is still the code's, and which of its steps the code lost."""
    definition = saga_definition(instance.name)
    if definition is None:
        return {"current": False, "missing_steps": list(instance.definition_steps), "declared": False}
    return {"current": definition.definition_hash == instance.definition_hash,
            "missing_steps": [name for name in instance.definition_steps if definition.step_named(name) is None],
            "declared": True}


def saga_waiting_for(*, name: str, key: str, topic: str) -> bool:
    """True while the running instance of (name, key) waits for a signal of ``topic``."""
    return SagaStepAttempt.objects.filter(
        instance__name=name, instance__key=key, instance__state=SagaInstance.State.RUNNING,
        kind=SagaStepAttempt.Kind.SIGNAL, state=SagaStepAttempt.State.WAITING, signal_topic=topic).exists()


def saga_last_failure(*, instance: SagaInstance) -> SagaStepAttempt | None:
    """The last action or signal attempt that failed or timed out: what made the instance compensate."""
    return (SagaStepAttempt.objects.filter(
        instance=instance, kind__in=[SagaStepAttempt.Kind.ACTION, SagaStepAttempt.Kind.SIGNAL],
        state__in=[SagaStepAttempt.State.FAILED, SagaStepAttempt.State.TIMED_OUT]).order_by("-id").first())
