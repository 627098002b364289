"""The engine's transitions, with attempts run in-process (real PostgreSQL; workers are tested elsewhere)."""

import pytest
from django.db import transaction

from apps.core.audit import Actor
from apps.core.errors import Conflict, InvalidInput, NotFound
from apps.core.models import OperatorAction
from apps.core.task_contract import SAGAS_RUN_STEP
from apps.outbox.models import OutboxMessage
from apps.sagas.engine import step_run
from apps.sagas.errors import SagaUsageError
from apps.sagas.models import SagaStepAttempt
from apps.sagas.selectors import saga_get, saga_list, saga_timeline
from apps.sagas.services import saga_cancel, saga_resolve, saga_retry, saga_start
from tests.apps.sagas.sagas_under_test import calls, calls_of
from tests.apps.sagas.support import run_scheduled, start, timeline

pytestmark = pytest.mark.django_db
OPERATOR = Actor(name="ops", via="cli")


def test_happy_path_runs_every_step_once_and_merges_results():
    saga = run_scheduled(start("tests.three", "k1", order=7))

    assert saga.state == "completed"
    assert saga.finished_at is not None
    assert calls() == ["k1:a:action:1", "k1:b:action:1", "k1:c:action:1"]
    assert saga.context["order"] == 7
    assert saga.context["a_done"] and saga.context["b_done"] and saga.context["c_done"]
    # the condition of "optional" was false: recorded as skipped, never called
    assert timeline(saga) == [("a", "action", 1, "succeeded"), ("b", "action", 1, "succeeded"),
                              ("optional", "action", 1, "skipped"), ("c", "action", 1, "succeeded")]


def test_a_true_condition_runs_the_step():
    saga = run_scheduled(start("tests.three", "k1", with_optional=True))

    assert saga.state == "completed"
    assert "k1:optional:action:1" in calls()


def test_each_attempt_is_dispatched_through_the_outbox_with_a_dedup_key():
    saga = start("tests.three", "k1")
    attempt = SagaStepAttempt.objects.get(instance=saga)

    row = OutboxMessage.objects.get(message_id=attempt.task_id)
    assert row.name == SAGAS_RUN_STEP
    assert row.dedup_key == f"sagas.run:{attempt.pk}"
    assert attempt.idempotency_key == f"{saga.pk}:a"


def test_permanent_failure_compensates_completed_steps_in_reverse_order():
    saga = run_scheduled(start("tests.three", "k1", fail={"c": {"permanent": True}}))

    assert saga.state == "compensated"
    assert calls() == ["k1:a:action:1", "k1:b:action:1", "k1:c:action:1",  # no retry of a permanent failure
                       "k1:b:compensation:1", "k1:a:compensation:1"]
    assert "step 'c' failed: Declined" in saga.failure


def test_transient_failures_are_retried_then_succeed_with_one_idempotency_key():
    saga = run_scheduled(start("tests.three", "k1", fail={"b": {"times": 2}}))

    assert saga.state == "completed"
    b_attempts = SagaStepAttempt.objects.filter(instance=saga, step="b").order_by("attempt")
    assert [a.state for a in b_attempts] == ["failed", "failed", "succeeded"]
    assert len({a.idempotency_key for a in b_attempts}) == 1
    assert calls_of(f"{saga.pk}:b") == 3
    assert "Flaky" in b_attempts[0].error


def test_retries_exhausted_compensate():
    saga = run_scheduled(start("tests.three", "k1", fail={"b": {"times": -1}}))

    assert saga.state == "compensated"
    assert [c for c in calls() if ":b:" in c] == ["k1:b:action:1", "k1:b:action:2", "k1:b:action:3"]
    assert calls()[-1] == "k1:a:compensation:1"


def test_retry_is_a_delayed_outbox_row_not_a_countdown():
    saga = start("tests.three", "k1", fail={"a": {"times": 1}})
    first = SagaStepAttempt.objects.get(instance=saga)
    step_run(attempt_id=first.pk)

    retry = SagaStepAttempt.objects.get(instance=saga, attempt=2)
    row = OutboxMessage.objects.get(message_id=retry.task_id)
    # the backoff is the row's due time (and the attempt's), in the database: the relay sends it then
    assert row.available_at >= retry.scheduled_at
    assert retry.scheduled_at >= SagaStepAttempt.objects.get(pk=first.pk).finished_at


def test_a_compensation_failing_twice_then_succeeding():
    saga = run_scheduled(start("tests.three", "k1", fail={"c": {"permanent": True}}, comp_fail={"a": {"times": 2}}))

    assert saga.state == "compensated"
    compensations = SagaStepAttempt.objects.filter(instance=saga, step="a", kind="compensation").order_by("attempt")
    assert [a.state for a in compensations] == ["failed", "failed", "succeeded"]
    assert {a.idempotency_key for a in compensations} == {f"{saga.pk}:a:compensation"}


def test_compensation_that_never_succeeds_waits_then_operator_retry_compensates(settings):
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 3
    saga = run_scheduled(start("tests.three", "k1", fail={"b": {"permanent": True}}, comp_fail={"a": {"times": 3}}))

    assert saga.state == "compensation_failed"
    assert "compensation of step 'a' failed 3 times" in saga.failure
    with pytest.raises(Conflict):
        saga_cancel(saga_id=saga.pk, actor=OPERATOR, reason="no")

    with transaction.atomic():
        saga_retry(saga_id=saga.pk, actor=OPERATOR, reason="the refund API is back")
    saga = run_scheduled(saga)

    assert saga.state == "compensated"
    last = SagaStepAttempt.objects.filter(instance=saga, kind="compensation").order_by("-id").first()
    assert (last.attempt, last.budget_attempt, last.state) == (4, 1, "succeeded")
    assert OperatorAction.objects.filter(action="saga.retry", target_id=str(saga.pk), actor="ops").exists()
    with pytest.raises(Conflict):
        saga_retry(saga_id=saga.pk, actor=OPERATOR, reason="again")


def test_resolve_needs_a_note_and_a_compensation_failed_saga(settings):
    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 1
    done = run_scheduled(start("tests.three", "ok"))
    with pytest.raises(Conflict):
        saga_resolve(saga_id=done.pk, actor=OPERATOR, note="nothing to do")
    saga = run_scheduled(start("tests.three", "k1", fail={"b": {"permanent": True}}, comp_fail={"a": {"times": -1}}))
    with pytest.raises(InvalidInput):
        saga_resolve(saga_id=saga.pk, actor=OPERATOR, note="  ")

    saga = saga_resolve(saga_id=saga.pk, actor=OPERATOR, note="refunded by hand, ticket 12")

    assert saga_get(saga_id=saga.pk).state == "compensated"
    assert saga.resolution_note == "refunded by hand, ticket 12"
    assert OperatorAction.objects.get(action="saga.resolve").reason == "refunded by hand, ticket 12"


def test_cancel_compensates_what_ran_and_ends_cancelled():
    saga = start("tests.three", "k1")
    step_run(attempt_id=SagaStepAttempt.objects.get(instance=saga, step="a").pk)  # a done, b scheduled

    saga_cancel(saga_id=saga.pk, actor=OPERATOR, reason="customer asked")
    saga = run_scheduled(saga)

    assert saga.state == "cancelled"
    assert calls() == ["k1:a:action:1", "k1:a:compensation:1"]
    assert SagaStepAttempt.objects.get(instance=saga, step="b").state == "cancelled"
    assert "cancelled by ops: customer asked" in saga.failure
    assert OperatorAction.objects.filter(action="saga.cancel", target_id=str(saga.pk)).count() == 1


def test_cancel_during_a_running_step_waits_for_it_and_compensates_it_too():
    saga = start("tests.three", "k1")
    attempt = SagaStepAttempt.objects.get(instance=saga, step="a")
    # the worker has claimed it: the step is in flight
    SagaStepAttempt.objects.filter(pk=attempt.pk).update(state="running", token="00000000-0000-0000-0000-000000000001")
    saga_cancel(saga_id=saga.pk, actor=OPERATOR, reason="stop")
    assert saga_get(saga_id=saga.pk).state == "running"  # nothing is compensated under a running step
    SagaStepAttempt.objects.filter(pk=attempt.pk).update(state="scheduled", token=None)  # ... it runs to the end:
    step_run(attempt_id=attempt.pk)
    saga = run_scheduled(saga)

    assert saga.state == "cancelled"
    assert calls() == ["k1:a:action:1", "k1:a:compensation:1"]
    assert not SagaStepAttempt.objects.filter(instance=saga, step="b").exists()


def test_cancel_refused_past_the_pivot_and_for_unknown_sagas():
    saga = start("tests.pivot", "k1")
    for step in ("a", "p"):
        step_run(attempt_id=SagaStepAttempt.objects.get(instance=saga, step=step).pk)
    with pytest.raises(Conflict):
        saga_cancel(saga_id=saga.pk, actor=OPERATOR, reason="too late")
    with pytest.raises(NotFound):
        saga_cancel(saga_id="not-a-uuid", actor=OPERATOR, reason="x")
    with pytest.raises(NotFound):
        saga_cancel(saga_id="6b8a3c1e-0000-4000-8000-000000000000", actor=OPERATOR, reason="x")


def test_failure_before_the_pivot_compensates(settings):
    saga = run_scheduled(start("tests.pivot", "k1", fail={"p": {"permanent": True}}))

    assert saga.state == "compensated"
    assert calls()[-1] == "k1:a:compensation:1"


def test_past_the_pivot_a_failing_step_is_retried_beyond_its_policy_until_it_succeeds():
    saga = run_scheduled(start("tests.pivot", "k1", fail={"after": {"times": 6, "permanent": True}}))

    assert saga.state == "completed"
    assert saga.pivot_passed
    assert SagaStepAttempt.objects.filter(instance=saga, step="after").count() == 7  # policy allows 3
    assert not any("compensation" in c for c in calls())


def test_redelivered_step_task_has_no_second_effect():
    saga = start("tests.three", "k1")
    attempt = SagaStepAttempt.objects.get(instance=saga, step="a")

    assert step_run(attempt_id=attempt.pk) == "succeeded"
    assert step_run(attempt_id=attempt.pk) == "already-succeeded"

    assert calls() == ["k1:a:action:1"]
    assert SagaStepAttempt.objects.filter(instance=saga, step="b").count() == 1


def test_start_is_idempotent_per_name_and_key_and_validates():
    first = start("tests.three", "k1", n=1)
    again = start("tests.three", "k1", n=2)

    assert again.pk == first.pk
    assert again.input == {"n": 1}
    assert SagaStepAttempt.objects.filter(instance=first).count() == 1
    assert OutboxMessage.objects.filter(name=SAGAS_RUN_STEP).count() == 1
    with pytest.raises(InvalidInput):
        start("tests.nope", "k1")
    with pytest.raises(InvalidInput):
        start("tests.three", "")
    with transaction.atomic(), pytest.raises(InvalidInput):
        saga_start("tests.three", key="k2", input={"bad": object()})


@pytest.mark.django_db(transaction=True)
def test_start_outside_a_transaction_is_refused():
    with pytest.raises(SagaUsageError):
        saga_start("tests.three", key="k1", input={})


def test_selectors_list_filter_and_timeline():
    one = run_scheduled(start("tests.three", "k1"))
    two = start("tests.three", "k2")

    assert list(saga_list()) == [two, one]
    assert list(saga_list(state="completed")) == [one]
    assert list(saga_list(key="k2", name="tests.three")) == [two]
    assert list(saga_list(created_after=one.created_at)) == [two, one]
    with pytest.raises(InvalidInput):
        saga_list(state="sleeping")
    assert [a.step for a in saga_timeline(saga_id=one.pk)] == ["a", "b", "optional", "c"]
