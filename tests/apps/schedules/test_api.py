"""The schedules staff API: strict input, problem details, the CRUD and operator actions, previews."""

from __future__ import annotations

import pytest

from apps.core.groups import OPERATORS
from apps.core.models import OperatorAction
from apps.schedules.models import Schedule, ScheduleFire
from tests.apps.schedules.schedule_tasks import RECORD
from tests.authz import key_client, staff_member

pytestmark = pytest.mark.django_db
BASE = {"name": "nightly", "task": RECORD, "cron": "30 2 * * *", "timezone": "Europe/Berlin"}


@pytest.fixture
def operator():
    return key_client(staff_member("op", group=OPERATORS))


@pytest.mark.parametrize(("changes", "field"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"task": "no.such.task"}, "task"),
    ({"cron": "", "interval_seconds": 0}, "interval_seconds"),
    ({"start_at": "2027-02-01T00:00:00Z", "end_at": "2027-01-01T00:00:00Z"}, "end_at"),
    ({"args": {"not": "a list"}}, "args"),
    ({"kwargs": [1]}, "kwargs"),
    ({"interval_seconds": 5}, "interval_seconds"),  # a second cadence next to the cron
    ({"surprise": 1}, "surprise"),
    ({"overlap": "sometimes"}, "overlap"),
])
def test_invalid_input_is_a_400_problem_with_field_errors_and_saves_nothing(operator, changes, field):
    response = operator.post("/api/schedules/", {**BASE, **changes}, format="json")

    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert field in {error["field"] for error in response.json()["errors"]}
    assert not Schedule.objects.exists()
    assert not OperatorAction.objects.filter(action="schedule.create").exists()


def test_create_read_patch_delete(operator):
    created = operator.post("/api/schedules/", BASE, format="json")
    assert created.status_code == 201, created.content
    assert created["Location"].endswith("/api/schedules/nightly/")
    assert created.json()["next_fire_at"] is not None

    assert operator.get("/api/schedules/nightly/").json()["cron"] == "30 2 * * *"
    assert operator.post("/api/schedules/", BASE, format="json").status_code == 409

    patched = operator.patch("/api/schedules/nightly/", {"interval_seconds": 60}, format="json")
    assert patched.status_code == 200, patched.content
    body = patched.json()
    assert (body["cron"], body["interval_seconds"], body["version"]) == ("", 60, 2)

    assert operator.delete("/api/schedules/nightly/").status_code == 204
    assert operator.get("/api/schedules/nightly/").status_code == 404
    assert list(OperatorAction.objects.order_by("id").values_list("action", flat=True)) == [
        "schedule.create", "schedule.update", "schedule.delete"]


def test_pause_resume_trigger_backfill_and_the_fire_history(operator):
    operator.post("/api/schedules/", {**BASE, "cron": "0 3 * * *", "timezone": "UTC"}, format="json")

    paused = operator.post("/api/schedules/nightly/pause/", {"note": "incident 42"}, format="json").json()
    assert (paused["enabled"], paused["note"]) == (False, "incident 42")
    resumed = operator.post("/api/schedules/nightly/resume/", {}, format="json").json()
    assert resumed["enabled"] is True and resumed["next_fire_at"]

    triggered = operator.post("/api/schedules/nightly/trigger/", {}, format="json")
    assert triggered.status_code == 202
    assert (triggered.json()["decision"], triggered.json()["manual"], triggered.json()["state"]) == (
        "manual", True, "enqueued")

    # The manual fire is still enqueued: under the schedule's own policy (skip) a backfill would skip.
    backfill = operator.post("/api/schedules/nightly/backfill/", {"start": "2026-11-01T00:00:00Z",
                             "end": "2026-11-03T00:00:00Z", "overlap": "allow_all"}, format="json")
    assert backfill.status_code == 202, backfill.content
    assert backfill.json() == {"enqueued": 2, "buffered": 0, "skipped": 0, "existing": 0}
    again = operator.post("/api/schedules/nightly/backfill/",
                          {"start": "2026-11-01T00:00:00Z", "end": "2026-11-03T00:00:00Z"}, format="json").json()
    assert again["existing"] == 2  # each nominal time fires once, however often it is backfilled

    fires = operator.get("/api/schedules/nightly/fires/").json()["results"]
    nominal = [fire["nominal_at"] for fire in fires]
    assert nominal == sorted(nominal, reverse=True)
    assert {fire["decision"] for fire in fires} == {"manual", "backfill"}
    assert ScheduleFire.objects.count() == 3


def test_backfill_of_a_future_range_is_refused(operator):
    operator.post("/api/schedules/", BASE, format="json")
    response = operator.post("/api/schedules/nightly/backfill/",
                             {"start": "2026-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}, format="json")
    assert response.status_code == 400
    assert response.json()["type"] == "urn:taskplane:problem:invalid-schedule"


def test_preview_answers_utc_instants_from_the_firing_code(operator):
    response = operator.get("/api/schedules/preview/", {"cron": "30 2 * * *", "timezone": "Europe/Berlin",
                                                        "start": "2027-03-26T12:00:00Z", "count": "3"})
    assert response.status_code == 200, response.content
    assert response.json()["fires"] == ["2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"]


@pytest.mark.parametrize("query", [{"cron": "bad"}, {"cron": "* * * * *", "timezone": "Nowhere/City"},
                                   {"cron": "* * * * *", "count": "0"}, {"cron": "* * * * *", "extra": "1"}])
def test_preview_refuses_bad_queries(operator, query):
    response = operator.get("/api/schedules/preview/", query)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
