"""Every staff API checks the model permissions admin checks, by API key and by session alike.

Issue 15 §11: the staff APIs checked ``is_staff`` only, so any staff user (or an API key of one) could
discard messages or change flags. Now reading needs ``view_<model>``, retry/discard/re-drive need
``change_outboxmessage`` (admin's "operate") and flag writes need the flag add/change/delete permissions.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission

from apps.core.audit import Actor
from apps.core.groups import OPERATORS, VIEWERS
from apps.flags.models import Flag
from apps.flags.services import flag_save
from apps.outbox.models import OutboxMessage
from apps.sagas.models import SagaInstance
from apps.schedules.models import Schedule, ScheduleFire
from apps.schedules.services import schedule_create
from tests.apps.outbox.support import event, stored
from tests.apps.sagas.control_support import failed_compensation_saga, running_saga
from tests.authz import key_client, session_client, staff_member

pytestmark = pytest.mark.django_db

AUTH = {"api key": key_client, "session": session_client}


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # formatted with the ids of the rows made by _rows()
    needs: tuple[str, ...]
    body: dict | None = None
    reads: bool = False


ENDPOINTS = [
    Endpoint("outbox stats", "get", "/api/outbox/stats/", ("outbox.view_outboxmessage",), reads=True),
    Endpoint("outbox messages", "get", "/api/outbox/messages/", ("outbox.view_outboxmessage",), reads=True),
    Endpoint("outbox retry", "post", "/api/outbox/messages/{dead}/retry/", ("outbox.change_outboxmessage",)),
    Endpoint("outbox discard", "post", "/api/outbox/messages/{pending}/discard/", ("outbox.change_outboxmessage",)),
    Endpoint("outbox re-drive", "post", "/api/outbox/messages/{published}/redrive/",
             ("outbox.change_outboxmessage",), body={"subscriber": "orders.start_checkout", "reason": "flag back on"}),
    Endpoint("flag list", "get", "/api/flags/", ("flags.view_flag",), reads=True),
    Endpoint("flag detail", "get", "/api/flags/beta/", ("flags.view_flag",), reads=True),
    Endpoint("flag create or replace", "post", "/api/flags/", ("flags.add_flag", "flags.change_flag"),
             body={"key": "gamma", "enabled": True, "reason": "launch"}),
    Endpoint("flag patch", "patch", "/api/flags/beta/", ("flags.change_flag",), body={"enabled": False, "reason": "x"}),
    Endpoint("flag delete", "delete", "/api/flags/beta/?reason=retired", ("flags.delete_flag",)),
    Endpoint("saga list", "get", "/api/sagas/", ("sagas.view_sagainstance",), reads=True),
    Endpoint("saga detail", "get", "/api/sagas/{failed_saga}/", ("sagas.view_sagainstance",), reads=True),
    Endpoint("saga cancel", "post", "/api/sagas/{running_saga}/cancel/", ("sagas.change_sagainstance",),
             body={"reason": "customer called"}),
    Endpoint("saga retry", "post", "/api/sagas/{failed_saga}/retry/", ("sagas.change_sagainstance",), body={}),
    Endpoint("saga resolve", "post", "/api/sagas/{failed_saga}/resolve/", ("sagas.change_sagainstance",),
             body={"note": "refunded by hand"}),
]
# Schedules (apps/schedules): the fixture schedule "nightly" is made by _rows().
ENDPOINTS += [
    Endpoint("schedule list", "get", "/api/schedules/", ("schedules.view_schedule",), reads=True),
    Endpoint("schedule preview", "get", "/api/schedules/preview/?cron=0+3+*+*+*", ("schedules.view_schedule",),
             reads=True),
    Endpoint("schedule detail", "get", "/api/schedules/nightly/", ("schedules.view_schedule",), reads=True),
    Endpoint("schedule fires", "get", "/api/schedules/nightly/fires/", ("schedules.view_schedule",), reads=True),
    Endpoint("schedule create", "post", "/api/schedules/", ("schedules.add_schedule",),
             body={"name": "hourly", "task": "core.heartbeat", "args": ["x"], "cron": "0 * * * *"}),
    Endpoint("schedule patch", "patch", "/api/schedules/nightly/", ("schedules.change_schedule",),
             body={"jitter_seconds": 5}),
    Endpoint("schedule pause", "post", "/api/schedules/nightly/pause/", ("schedules.change_schedule",),
             body={"note": "incident"}),
    Endpoint("schedule resume", "post", "/api/schedules/nightly/resume/", ("schedules.change_schedule",), body={}),
    Endpoint("schedule trigger", "post", "/api/schedules/nightly/trigger/", ("schedules.change_schedule",), body={}),
    Endpoint("schedule backfill", "post", "/api/schedules/nightly/backfill/", ("schedules.change_schedule",),
             body={"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z"}),
    Endpoint("schedule delete", "delete", "/api/schedules/nightly/", ("schedules.delete_schedule",)),
]
BY_NAME = {endpoint.name: endpoint for endpoint in ENDPOINTS}


def _rows() -> dict[str, int]:
    flag_save(definition={"key": "beta", "enabled": True, "rules": []}, actor="setup", reason="fixture")
    schedule_create(data={"name": "nightly", "task": "core.heartbeat", "args": ["n"], "cron": "0 3 * * *"},
                    actor=Actor(name="setup", via="cli"))
    return {
        "dead": stored(status="dead").pk,
        "pending": event().pk,
        "published": stored(status="published", payload='{"order_id": 1, "sku": "S", "quantity": 1}').pk,
        "running_saga": running_saga().pk,
        "failed_saga": failed_compensation_saga().pk,
    }


def _state() -> tuple:
    """What any staff call could change: outbox rows and their statuses, flags and their versions, sagas."""
    return (sorted(OutboxMessage.objects.values_list("id", "status")),
            sorted(Flag.objects.values_list("key", "version")),
            sorted(Schedule.objects.values_list("name", "version")), ScheduleFire.objects.count(),
            sorted(SagaInstance.objects.values_list("id", "state", "version", "cancel_requested")))


def _call(client, endpoint: Endpoint, rows: dict[str, int]):
    path = endpoint.path.format(**rows)
    return getattr(client, endpoint.method)(path, endpoint.body, format="json") if endpoint.body is not None \
        else getattr(client, endpoint.method)(path)


def _grant(user, *names: str) -> None:
    for name in names:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


@pytest.mark.parametrize("auth", AUTH)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.name)
def test_staff_without_the_permission_get_403_and_change_nothing(endpoint, auth):
    rows = _rows()
    before = _state()

    response = _call(AUTH[auth](staff_member("plain-staff")), endpoint, rows)

    assert response.status_code == 403, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert all(name in response.json()["detail"] for name in endpoint.needs)  # says what is missing
    assert _state() == before


@pytest.mark.parametrize("auth", AUTH)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.name)
def test_staff_with_exactly_the_permissions_it_needs_are_let_through(endpoint, auth):
    rows = _rows()
    user = staff_member("granted")
    _grant(user, *endpoint.needs)

    response = _call(AUTH[auth](user), endpoint, rows)

    assert 200 <= response.status_code < 300, response.content


@pytest.mark.parametrize("auth", AUTH)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.name)
def test_viewers_read_but_cannot_act(endpoint, auth):
    rows = _rows()
    before = _state()

    response = _call(AUTH[auth](staff_member("viewer", group=VIEWERS)), endpoint, rows)

    if endpoint.reads:
        assert response.status_code == 200, response.content
    else:
        assert response.status_code == 403, response.content
        assert _state() == before


@pytest.mark.parametrize("auth", AUTH)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.name)
def test_operators_read_and_act(endpoint, auth):
    rows = _rows()

    response = _call(AUTH[auth](staff_member("operator", group=OPERATORS)), endpoint, rows)

    assert 200 <= response.status_code < 300, response.content


def test_creating_or_replacing_a_flag_needs_add_and_change():
    """POST /api/flags/ may replace an existing flag: the add permission alone does not allow it."""
    rows = _rows()
    user = staff_member("adder")
    _grant(user, "flags.add_flag")

    response = _call(key_client(user), BY_NAME["flag create or replace"], rows)

    assert response.status_code == 403, response.content
    assert "flags.change_flag" in response.json()["detail"]
    assert not Flag.objects.filter(key="gamma").exists()


def test_acting_does_not_imply_reading():
    rows = _rows()
    user = staff_member("actor-only")
    _grant(user, "outbox.change_outboxmessage")
    client = key_client(user)

    assert _call(client, BY_NAME["outbox messages"], rows).status_code == 403
    assert _call(client, BY_NAME["outbox retry"], rows).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.name)
def test_permissions_do_not_replace_staff_status(endpoint, django_user_model):
    """As in admin, a non-staff user is refused even when holding the model permission."""
    rows = _rows()
    user = django_user_model.objects.create_user(username="not-staff", password="x")
    _grant(user, *endpoint.needs)

    assert _call(key_client(user), endpoint, rows).status_code == 403


def test_a_method_the_endpoint_does_not_have_is_405_for_staff_and_401_for_anonymous(client):
    operator = key_client(staff_member("operator", group=OPERATORS))

    assert operator.put("/api/outbox/stats/").status_code == 405
    assert client.put("/api/outbox/stats/").status_code == 401
