"""Helpers of the saga engine tests: start a saga in its own transaction, run its due attempts in-process."""

from __future__ import annotations

from django.db import transaction

from apps.sagas.engine import step_run
from apps.sagas.models import SagaInstance, SagaStepAttempt
from apps.sagas.services import saga_start
from tests.apps.sagas import sagas_under_test  # noqa: F401  (declares the test sagas)

OPEN = ("running", "compensating")


def start(name: str, key: str, **data) -> SagaInstance:
    """Start a saga in a transaction of its own."""
    with transaction.atomic():
        return saga_start(name, key=key, input=data)


def run_scheduled(saga: SagaInstance, *, limit: int = 100, only: int | None = None) -> SagaInstance:
    """Run the saga's scheduled attempts in this process, as workers would, until none is left (or ``only`` ran)."""
    for _ in range(limit if only is None else only):
        due = SagaStepAttempt.objects.filter(instance=saga, state="scheduled").order_by("id").first()
        if due is None:
            break
        step_run(attempt_id=due.pk)
    else:
        if only is not None:
            return SagaInstance.objects.get(pk=saga.pk)
        raise AssertionError(f"saga {saga.pk} still has scheduled attempts after {limit} runs")
    return SagaInstance.objects.get(pk=saga.pk)


def timeline(saga: SagaInstance) -> list[tuple[str, str, int, str]]:
    """(step, kind, attempt, state) of every attempt, in order."""
    return list(SagaStepAttempt.objects.filter(instance=saga).order_by("id")
                .values_list("step", "kind", "attempt", "state"))
