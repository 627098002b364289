"""Saga control-plane API: staff only, filters and detail with the timeline, cancel/retry/resolve audited."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.groups import OPERATORS, VIEWERS
from apps.core.models import OperatorAction
from apps.sagas.models import SagaInstance
from tests.apps.sagas.control_support import (
    NAME,
    State,
    attempt_row,
    failed_compensation_saga,
    instance_row,
    running_saga,
)
from tests.authz import key_client, staff_member

pytestmark = pytest.mark.django_db

LIST_FIELDS = {"id", "name", "key", "state", "step_index", "pivot_passed", "failure", "cancel_requested",
               "resolution_note", "deadline_at", "created_at", "updated_at", "finished_at"}
ATTEMPT_FIELDS = {"id", "step", "step_index", "kind", "attempt", "budget_attempt", "state", "idempotency_key",
                  "task_id", "scheduled_at", "started_at", "finished_at", "deadline_at", "duration_seconds", "result",
                  "error", "signal_topic", "signal_key"}


@pytest.fixture
def operator():
    return key_client(staff_member("ops", group=OPERATORS))


@pytest.fixture
def viewer():
    return key_client(staff_member("viewer", group=VIEWERS))


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    return response.json()


def listed(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


SOME_ID = "0b6f5a8e-8f43-4a5e-9a57-1d2a0c7c0d11"
ENDPOINTS = [("get", "/api/sagas/"), ("get", f"/api/sagas/{SOME_ID}/"), ("post", f"/api/sagas/{SOME_ID}/cancel/"),
             ("post", f"/api/sagas/{SOME_ID}/retry/"), ("post", f"/api/sagas/{SOME_ID}/resolve/")]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_callers_get_401_and_non_staff_403(api_client, client, method, path):
    assert_problem(getattr(client, method)(path), 401)
    assert_problem(getattr(api_client, method)(path), 403)


def test_the_list_is_newest_first_and_filters_by_name_state_key_and_creation_time(operator):
    old = instance_row(key="order-1", state=State.COMPLETED)
    SagaInstance.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    failed = failed_compensation_saga(key="order-2")
    other = instance_row(key="order-1", name="tests.control.other")
    newest = instance_row(key="order-3")
    yesterday = (timezone.now() - timedelta(days=1)).isoformat()

    assert listed(operator.get("/api/sagas/")) == [str(newest.pk), str(other.pk), str(failed.pk), str(old.pk)]
    assert listed(operator.get("/api/sagas/", {"name": NAME})) == [str(newest.pk), str(failed.pk), str(old.pk)]
    assert listed(operator.get("/api/sagas/", {"state": "compensation_failed"})) == [str(failed.pk)]
    assert listed(operator.get("/api/sagas/", {"key": "order-1"})) == [str(other.pk), str(old.pk)]
    assert listed(operator.get("/api/sagas/", {"key": "order-1", "name": NAME})) == [str(old.pk)]
    assert listed(operator.get("/api/sagas/", {"created_before": yesterday})) == [str(old.pk)]
    assert str(old.pk) not in listed(operator.get("/api/sagas/", {"created_after": yesterday}))
    assert listed(operator.get("/api/sagas/", {"state": "", "name": ""})) == listed(operator.get("/api/sagas/"))
    body = operator.get("/api/sagas/", {"page_size": 1}).json()
    assert (body["count"], body["count_estimated"], set(body["results"][0])) == (4, False, LIST_FIELDS)
    assert body["next"]


@pytest.mark.parametrize("query", [
    {"state": "stuck"}, {"colour": "red"}, {"created_before": "yesterday"},
    {"created_after": "2026-01-01T00:00:00"},  # no offset: ambiguous
    {"created_after": "2026-01-01T00:00:00+18:00"},  # an offset PostgreSQL cannot store
    {"created_after": "2026-01-01T00:00:00Z", "created_before": ["a", "b"]},
    {"page": "0"},
])
def test_bad_filters_are_400_problems(operator, query):
    problem = assert_problem(operator.get("/api/sagas/", query), 400)

    assert problem["errors"]


def test_created_bounds_take_any_rfc3339_time_and_beyond_the_calendar_are_clamped(operator):
    saga = instance_row()

    assert listed(operator.get("/api/sagas/", {"created_after": "2000-01-01T00:00:00z"})) == [str(saga.pk)]

    assert listed(operator.get("/api/sagas/", {"created_after": "0001-01-01T00:00:00+01:00"})) == [str(saga.pk)]
    assert listed(operator.get("/api/sagas/", {"created_before": "9999-12-31T23:59:59-01:00"})) == [str(saga.pk)]


def test_the_detail_has_the_timeline_in_order_and_the_definition_status(viewer):
    saga = failed_compensation_saga()

    response = viewer.get(f"/api/sagas/{saga.pk}/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["state"], body["failure"]) == (str(saga.pk), "compensation_failed",
                                                            "charge: card declined")
    assert body["definition"] == {"current": True, "declared": True, "missing_steps": []}
    assert body["definition_steps"] == ["reserve", "charge", "confirm"]
    assert body["input"] == {"order_id": 7}
    timeline = body["timeline"]
    assert [(row["step"], row["kind"], row["attempt"], row["state"]) for row in timeline] == [
        ("reserve", "action", 1, "succeeded"), ("charge", "action", 1, "failed"),
        ("reserve", "compensation", 1, "failed"), ("reserve", "compensation", 2, "failed"),
    ]
    assert set(timeline[0]) == ATTEMPT_FIELDS
    assert timeline[0]["result"] == {"reservation_id": 41}
    assert timeline[0]["duration_seconds"] == pytest.approx(0.12)
    assert timeline[1]["error"] == "PaymentDeclined: card declined"
    assert timeline[2]["idempotency_key"] == f"{saga.pk}:0:compensation"


def test_the_detail_shows_a_changed_definition(operator):
    saga = instance_row(steps=("reserve", "charge", "ship"), definition_hash="0" * 64)
    attempt_row(saga, step="reserve", state="running", ran_ms=None)
    gone = instance_row(name="tests.control.removed", steps=("a", "b"), definition_hash="1" * 64)

    assert operator.get(f"/api/sagas/{saga.pk}/").json()["definition"] == {
        "current": False, "declared": True, "missing_steps": ["ship"]}
    assert operator.get(f"/api/sagas/{gone.pk}/").json()["definition"]["declared"] is False
    assert operator.get(f"/api/sagas/{saga.pk}/").json()["timeline"][0]["duration_seconds"] is None


def test_an_unknown_id_is_404_and_a_malformed_one_matches_no_url(operator):
    assert assert_problem(operator.get(f"/api/sagas/{uuid.uuid4()}/"), 404)["type"] == "urn:taskplane:problem:not-found"
    assert assert_problem(operator.post(f"/api/sagas/{uuid.uuid4()}/cancel/", {}, format="json"), 404)
    assert assert_problem(operator.get("/api/sagas/not-a-uuid/"), 404)["type"] == "about:blank"


def _audit(saga) -> list[tuple[str, str, str, str]]:
    return list(OperatorAction.objects.filter(target_id=str(saga.pk)).values_list("action", "actor", "via", "reason"))


def test_cancel_compensates_a_running_saga_and_is_audited(operator):
    saga = running_saga()

    response = operator.post(f"/api/sagas/{saga.pk}/cancel/", {"reason": "customer called"}, format="json",
                             HTTP_IDEMPOTENCY_KEY="cancel-1")

    assert response.status_code == 200, response.content
    saga.refresh_from_db()
    assert saga.cancel_requested or saga.state in (State.COMPENSATING, State.CANCELLED)
    assert response.json()["state"] == saga.state
    assert _audit(saga) == [("saga.cancel", "ops", "api", "customer called")]
    replay = operator.post(f"/api/sagas/{saga.pk}/cancel/", {"reason": "customer called"}, format="json",
                           HTTP_IDEMPOTENCY_KEY="cancel-1")
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (200, "true")
    assert len(_audit(saga)) == 1


def test_cancel_of_a_finished_saga_is_a_409_and_changes_nothing(operator):
    saga = instance_row(state=State.COMPLETED, finished_at=timezone.now())

    assert_problem(operator.post(f"/api/sagas/{saga.pk}/cancel/", {}, format="json"), 409)

    saga.refresh_from_db()
    assert (saga.state, saga.cancel_requested, _audit(saga)) == (State.COMPLETED, False, [])


def test_retry_puts_a_failed_compensation_back_to_compensating(operator):
    saga = failed_compensation_saga()

    response = operator.post(f"/api/sagas/{saga.pk}/retry/", {"reason": "stock service is back"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["state"] == "compensating"
    assert SagaInstance.objects.get(pk=saga.pk).state == State.COMPENSATING
    assert _audit(saga) == [("saga.retry", "ops", "api", "stock service is back")]


def test_retry_of_a_running_saga_is_a_409(operator):
    saga = running_saga()

    assert_problem(operator.post(f"/api/sagas/{saga.pk}/retry/", format="json"), 409)

    assert (SagaInstance.objects.get(pk=saga.pk).state, _audit(saga)) == (State.RUNNING, [])


def test_resolve_needs_a_note_and_marks_the_saga_compensated_with_it(operator):
    saga = failed_compensation_saga()
    url = f"/api/sagas/{saga.pk}/resolve/"

    for body in ({}, {"note": ""}, {"note": "   "}, {"note": 5}, {"note": "ok", "reason": "x"}):
        assert_problem(operator.post(url, body, format="json"), 400)
    assert SagaInstance.objects.get(pk=saga.pk).state == State.COMPENSATION_FAILED

    response = operator.post(url, {"note": "released the stock by hand"}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["state"], response.json()["resolution_note"]) == ("compensated",
                                                                              "released the stock by hand")
    saga.refresh_from_db()
    assert (saga.state, saga.resolution_note) == (State.COMPENSATED, "released the stock by hand")
    assert _audit(saga) == [("saga.resolve", "ops", "api", "released the stock by hand")]
    assert_problem(operator.post(url, {"note": "again"}, format="json"), 409)


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_action_bodies_are_strict(operator, action):
    saga = failed_compensation_saga()

    for body in ({"reason": 3}, {"why": "x"}, {"reason": "x\x00y"}):
        assert_problem(operator.post(f"/api/sagas/{saga.pk}/{action}/", body, format="json"), 400)

    assert (SagaInstance.objects.get(pk=saga.pk).state, _audit(saga)) == (State.COMPENSATION_FAILED, [])


@pytest.mark.parametrize("action", ["cancel", "retry", "resolve"])
def test_viewers_read_but_every_action_is_403(viewer, action):
    saga = failed_compensation_saga()

    assert viewer.get(f"/api/sagas/{saga.pk}/").status_code == 200
    problem = assert_problem(viewer.post(f"/api/sagas/{saga.pk}/{action}/", {"note": "n"}, format="json"), 403)

    assert "sagas.change_sagainstance" in problem["detail"]
    assert (SagaInstance.objects.get(pk=saga.pk).state, _audit(saga)) == (State.COMPENSATION_FAILED, [])


def test_an_operator_retry_brings_a_real_compensation_failed_saga_to_compensated(operator, settings):
    """Through the engine: b fails for good, a's compensation fails its whole budget, the API retry finishes it."""
    from tests.apps.sagas.support import run_scheduled, start

    settings.SAGAS_COMPENSATION_MAX_ATTEMPTS = 2
    saga = run_scheduled(start("tests.three", "order-9", fail={"b": {"permanent": True}},
                               comp_fail={"a": {"times": 2}}))
    assert saga.state == State.COMPENSATION_FAILED

    listed_ids = listed(operator.get("/api/sagas/", {"state": "compensation_failed", "key": "order-9"}))
    response = operator.post(f"/api/sagas/{saga.pk}/retry/", {"reason": "stock service is back"}, format="json")

    assert listed_ids == [str(saga.pk)]
    assert (response.status_code, response.json()["state"]) == (200, "compensating"), response.content
    assert run_scheduled(saga).state == State.COMPENSATED
    timeline = operator.get(f"/api/sagas/{saga.pk}/").json()["timeline"]
    compensations = [row for row in timeline if row["kind"] == "compensation"]
    assert [(row["step"], row["attempt"], row["budget_attempt"], row["state"]) for row in compensations] == [
        ("a", 1, 1, "failed"), ("a", 2, 2, "failed"), ("a", 3, 1, "succeeded")]  # the retry's fresh budget
    assert len({row["idempotency_key"] for row in compensations}) == 1  # the retry reuses the step's key
    assert all(row["duration_seconds"] is not None and row["started_at"] for row in compensations)
    assert _audit(saga) == [("saga.retry", "ops", "api", "stock service is back")]
