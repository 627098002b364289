"""A definition changed under running instances, database-only steps in the completion's transaction, outages."""

import pytest
import redis
from django.db import transaction

from apps.core.audit import Actor
from apps.core.models import Heartbeat
from apps.sagas import definitions
from apps.sagas.definitions import SagaDefinition
from apps.sagas.engine import step_run
from apps.sagas.models import SagaStepAttempt
from apps.sagas.selectors import saga_definition_status
from apps.sagas.services import saga_retry
from tests.apps.sagas.sagas_under_test import PIVOT, THREE, _step, calls
from tests.apps.sagas.support import run_scheduled, start, timeline

pytestmark = pytest.mark.django_db


@pytest.fixture
def redeclare():
    """Replace a saga's definition in this process, as a deploy of changed code would; restored afterwards."""
    saved = definitions.declared_sagas()

    def replace(original: SagaDefinition, *step_names: str) -> None:
        steps = [original.step_named(name) or _step(name) for name in step_names]
        definitions._declared[original.name] = SagaDefinition(name=original.name, steps=tuple(steps),
                                                              declared_in=original.declared_in)

    yield replace
    definitions._declared.clear()
    definitions._declared.update(saved)


def test_instances_finish_on_their_recorded_steps_when_steps_are_added(redeclare):
    saga = start("tests.three", "k1")
    redeclare(THREE, "a", "b", "optional", "c", "d")

    assert saga_definition_status(saga) == {"current": False, "missing_steps": [], "declared": True}
    saga = run_scheduled(saga)

    assert saga.state == "completed"
    assert [step for step, *_ in timeline(saga)] == ["a", "b", "optional", "c"]  # not the new "d"
    assert start("tests.three", "k2").definition_steps == ["a", "b", "optional", "c", "d"]


def test_a_removed_forward_step_compensates_instead_of_crashing(redeclare):
    saga = start("tests.three", "k1")
    redeclare(THREE, "a", "c")

    assert saga_definition_status(saga) == {"current": False, "missing_steps": ["b", "optional"], "declared": True}
    saga = run_scheduled(saga)

    assert saga.state == "compensated"
    assert "step 'b' is no longer declared" in saga.failure
    assert calls() == ["k1:a:action:1", "k1:a:compensation:1"]
    assert ("b", "action", 1, "failed") in timeline(saga)


def test_a_removed_step_past_the_pivot_waits_for_an_operator_then_retry_finishes_it(redeclare):
    saga = start("tests.pivot", "k1")
    run_scheduled(saga, only=1)
    redeclare(PIVOT, "a", "p")
    saga = run_scheduled(saga)
    assert saga.state == "compensation_failed"
    assert "cannot go forward past the pivot" in saga.failure

    redeclare(PIVOT, "a", "p", "after")  # the step is back
    with transaction.atomic():
        saga_retry(saga_id=saga.pk, actor=Actor(name="ops", via="cli"), reason="step restored")
    saga = run_scheduled(saga)

    assert saga.state == "completed"
    assert calls()[-1] == "k1:after:action:2"


def test_an_undeclared_saga_is_reported_and_its_step_is_recorded_not_run(redeclare):
    saga = start("tests.three", "k1")
    definitions._declared.pop("tests.three")

    assert saga_definition_status(saga) == {"current": False, "missing_steps": ["a", "b", "optional", "c"],
                                            "declared": False}
    attempt = SagaStepAttempt.objects.get(instance=saga)
    assert step_run(attempt_id=attempt.pk) == "not-declared"
    saga.refresh_from_db()
    assert saga.state == "compensated"  # nothing had run, so nothing to compensate
    assert calls() == []


def test_in_transaction_step_writes_commit_with_its_result_and_roll_back_with_its_failure():
    saga = run_scheduled(start("tests.in_transaction", "k1", fail={"write": {"times": 1}}))

    assert saga.state == "completed"
    assert saga.context["written"] == 2
    assert not Heartbeat.objects.filter(name="saga:k1:1").exists()  # the failed attempt's write rolled back
    assert Heartbeat.objects.filter(name="saga:k1:2").exists()


def test_an_outage_inside_a_step_is_raised_and_does_not_count_as_an_attempt():
    saga = start("tests.three", "k1", outage={"a": 1})
    attempt = SagaStepAttempt.objects.get(instance=saga)

    with pytest.raises(redis.ConnectionError):
        step_run(attempt_id=attempt.pk)  # the task failure policy requeues the message

    attempt.refresh_from_db()
    assert (attempt.state, attempt.token, attempt.started_at) == ("scheduled", None, None)
    assert run_scheduled(saga).state == "completed"
    assert SagaStepAttempt.objects.filter(instance=saga, step="a").count() == 1


def test_a_raising_condition_fails_the_step_instead_of_the_transaction(redeclare):
    def broken(data):
        raise KeyError("no such field")

    redeclare(THREE, "a", "b", "optional", "c")
    definitions._declared["tests.three"] = SagaDefinition(
        name="tests.three", declared_in=THREE.declared_in,
        steps=tuple(_step(name, when=broken) if name == "optional" else THREE.step_named(name)
                    for name in ("a", "b", "optional", "c")))
    saga = run_scheduled(start("tests.three", "k1"))

    assert saga.state == "compensated"
    assert "step 'optional' cannot run: KeyError" in saga.failure
    assert calls() == ["k1:a:action:1", "k1:b:action:1", "k1:b:compensation:1", "k1:a:compensation:1"]
