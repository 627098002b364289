"""/api/webhooks/: owners manage their endpoints; staff read and act by model permission; errors change nothing."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.groups import OPERATORS, VIEWERS
from apps.core.models import OperatorAction
from apps.idempotency.models import IdempotencyRecord
from apps.idempotency.records import record_body
from apps.notifications.delivery import delivery_attempt
from apps.notifications.models import Delivery, Endpoint, Message
from tests.apps.notifications.support import delivery_of, endpoint_for, fan_out
from tests.authz import key_client, staff_member

pytestmark = pytest.mark.django_db
BASE = "/api/webhooks/endpoints/"


def test_create_shows_the_secret_once_and_on_request(api_client, receiver):
    response = api_client.post(BASE, {"url": receiver.url("/api"), "event_types": ["order.*"],
                                      "description": "orders"}, format="json")

    assert response.status_code == 201, response.content
    data = response.json()
    assert data["secret"].startswith("whsec_") and len(base64.b64decode(data["secret"][6:])) == 24
    assert response["Location"].endswith(f"{BASE}{data['id']}/")
    assert api_client.get(f"{BASE}{data['id']}/secret/").json()["secret"] == data["secret"]
    assert "secret" not in api_client.get(f"{BASE}{data['id']}/").json()

    rotated = api_client.post(f"{BASE}{data['id']}/rotate-secret/").json()
    assert rotated["secret"] != data["secret"] and rotated["previous_secret_until"]
    assert api_client.get(f"{BASE}{data['id']}/secret/").json()["secret"] == rotated["secret"]


@pytest.mark.parametrize("body, field", [
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "http://127.0.0.1:9/x", "event_types": ["ordr.*"]}, "event_types"),
    ({"url": "http://127.0.0.1:9/x", "event_types": ["order.shipped"]}, "event_types"),
    ({"url": "http://127.0.0.1:9/x", "headers": {"webhook-id": "mine"}}, "headers"),
])
def test_bad_input_is_a_problem_and_saves_nothing(api_client, body, field):
    response = api_client.post(BASE, body, format="json")

    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert field in response.content.decode()
    assert not Endpoint.objects.exists()


def test_a_private_address_is_refused_at_creation(api_client, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_HOSTS = False

    response = api_client.post(BASE, {"url": "http://127.0.0.1:9/x"}, format="json")

    assert response.status_code == 400 and "loopback" in response.json()["detail"]
    assert not Endpoint.objects.exists()


def test_owners_see_only_their_own_endpoints(api_client, other_user):
    theirs, _ = endpoint_for(other_user, "http://127.0.0.1:9/theirs")

    assert api_client.get(BASE).json()["results"] == []
    assert api_client.get(f"{BASE}{theirs.pk}/").status_code == 404
    assert api_client.patch(f"{BASE}{theirs.pk}/", {"enabled": False}, format="json").status_code == 404
    assert api_client.delete(f"{BASE}{theirs.pk}/").status_code == 404
    assert Endpoint.objects.get(pk=theirs.pk).enabled


def test_viewers_read_every_endpoint_but_cannot_act_or_see_secrets(other_user, receiver):
    endpoint, _ = endpoint_for(other_user, receiver.url("/viewer"))
    message_id = fan_out()
    client = key_client(staff_member("viewer", group=VIEWERS))

    assert [row["id"] for row in client.get(BASE).json()["results"]] == [str(endpoint.pk)]
    assert client.get(f"/api/webhooks/messages/?endpoint={endpoint.pk}").json()["results"][0]["id"] == message_id
    for response in (client.get(f"{BASE}{endpoint.pk}/secret/"),
                     client.post(f"/api/webhooks/messages/{message_id}/replay/", {"endpoint": str(endpoint.pk)},
                                 format="json"),
                     client.patch(f"{BASE}{endpoint.pk}/", {"enabled": False}, format="json")):
        assert response.status_code == 403, response.content
        assert response["Content-Type"] == "application/problem+json"
    assert key_client(staff_member("plain-staff")).get(BASE).json()["results"] == []


def test_operators_replay_and_disable_but_do_not_edit_or_read_secrets(other_user, receiver):
    endpoint, _ = endpoint_for(other_user, receiver.url("/operator"))
    delivery = delivery_of(fan_out(), endpoint)
    delivery_attempt(delivery_id=delivery.pk)
    client = key_client(staff_member("operator", group=OPERATORS))

    replay = client.post(f"/api/webhooks/messages/{delivery.message_id}/replay/", {"endpoint": str(endpoint.pk)},
                         format="json")
    assert replay.status_code == 202, replay.content
    assert client.patch(f"{BASE}{endpoint.pk}/", {"url": "http://127.0.0.1:9/evil"}, format="json").status_code == 403
    assert client.get(f"{BASE}{endpoint.pk}/secret/").status_code == 403
    assert client.patch(f"{BASE}{endpoint.pk}/", {"enabled": False}, format="json").json()["enabled"] is False
    assert OperatorAction.objects.filter(action="webhooks.replay", actor="operator").exists()


def test_replay_keeps_the_webhook_id(api_client, user, receiver):
    endpoint, _ = endpoint_for(user, receiver.url("/replay"))
    delivery = delivery_of(fan_out(), endpoint)
    delivery_attempt(delivery_id=delivery.pk)

    response = api_client.post(f"/api/webhooks/messages/{delivery.message_id}/replay/",
                               {"endpoint": str(endpoint.pk)}, format="json")
    assert response.status_code == 202, response.content
    again = api_client.post(f"/api/webhooks/messages/{delivery.message_id}/replay/",
                            {"endpoint": str(endpoint.pk)}, format="json")
    assert again.status_code == 202  # still pending: a second task, but the claim lets one attempt through
    assert delivery_attempt(delivery_id=delivery.pk) == "sent"
    assert delivery_attempt(delivery_id=delivery.pk) == "already-succeeded"
    Delivery.objects.filter(pk=delivery.pk).update(state="sending")
    busy = api_client.post(f"/api/webhooks/messages/{delivery.message_id}/replay/",
                           {"endpoint": str(endpoint.pk)}, format="json")
    assert busy.status_code == 409
    Delivery.objects.filter(pk=delivery.pk).update(state="succeeded")

    first, second = receiver.at("/replay")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(delivery.message_id)
    log = api_client.get(f"/api/webhooks/messages/{delivery.message_id}/").json()["deliveries"][0]
    assert log["state"] == "succeeded" and len(log["attempt_log"]) == 2


def test_recover_requeues_failed_messages_since_a_time(api_client, user, receiver, settings):
    settings.WEBHOOKS_RETRY_SCHEDULE = [0]
    receiver.script("/recover", (500, {}), (500, {}))
    endpoint, _ = endpoint_for(user, receiver.url("/recover"))
    old, recent = (delivery_of(fan_out(), endpoint) for _ in range(2))
    for delivery in (old, recent):
        delivery_attempt(delivery_id=delivery.pk)
    Message.objects.filter(pk=old.message_id).update(created_at=timezone.now() - timedelta(days=2))

    response = api_client.post(f"{BASE}{endpoint.pk}/recover/",
                               {"since": (timezone.now() - timedelta(days=1)).isoformat()}, format="json")

    assert response.status_code == 202 and response.json() == {"recovered": 1}
    assert dict(Delivery.objects.filter(endpoint=endpoint).values_list("pk", "state")) == {
        old.pk: "failed", recent.pk: "pending"}
    assert delivery_attempt(delivery_id=recent.pk) == "sent"


def test_a_test_message_goes_to_that_endpoint(api_client, user, receiver):
    endpoint, _ = endpoint_for(user, receiver.url("/test"), event_types=["order.placed"])

    response = api_client.post(f"{BASE}{endpoint.pk}/test/")

    assert response.status_code == 202, response.content
    assert response.json()["topic"] == "webhook.test"
    assert delivery_attempt(delivery_id=Delivery.objects.get(endpoint=endpoint).pk) == "sent"


def test_create_with_an_idempotency_key_runs_once(api_client):
    body = {"url": "http://127.0.0.1:9/idem"}
    first = api_client.post(BASE, body, format="json", HTTP_IDEMPOTENCY_KEY="create-1")
    second = api_client.post(BASE, body, format="json", HTTP_IDEMPOTENCY_KEY="create-1")

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert Endpoint.objects.count() == 1


@pytest.mark.parametrize("rotate", [False, True], ids=["create", "rotate"])
def test_an_answer_holding_a_secret_is_kept_encrypted_by_the_idempotency_record(api_client, settings, rotate):
    settings.IDEMPOTENCY_ENCRYPT_RESPONSES = False  # the secret's answer is encrypted all the same
    created = api_client.post(BASE, {"url": "http://127.0.0.1:9/kept"}, format="json",
                              HTTP_IDEMPOTENCY_KEY="secret-1").json()
    answer = created
    if rotate:
        answer = api_client.post(f"{BASE}{created['id']}/rotate-secret/", HTTP_IDEMPOTENCY_KEY="secret-2").json()

    record = IdempotencyRecord.objects.get(key="secret-2" if rotate else "secret-1")
    assert record.body_encrypted
    assert answer["secret"].encode() not in bytes(record.response_body)
    assert json.loads(record_body(record))["secret"] == answer["secret"]


def test_re_enabling_clears_the_reason(api_client, user):
    endpoint, _ = endpoint_for(user, "http://127.0.0.1:9/reenable")
    Endpoint.objects.filter(pk=endpoint.pk).update(enabled=False, disabled_reason="410", failing_since=timezone.now())

    data = api_client.patch(f"{BASE}{endpoint.pk}/", {"enabled": True}, format="json").json()

    assert data["enabled"] is True and data["disabled_reason"] == "" and data["failing_since"] is None
