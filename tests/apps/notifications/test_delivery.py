"""Delivery attempts, service level: real PostgreSQL, a real HTTP receiver on loopback, the real client."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.db.models.functions import Now
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.core.http_client import UrlRefused
from apps.core.task_contract import WEBHOOKS_DELIVER
from apps.emails.models import Email
from apps.notifications.delivery import delivery_attempt, next_delay
from apps.notifications.models import Attempt, Delivery, Endpoint, Message
from apps.notifications.services import endpoint_secret_rotate
from apps.outbox.models import OutboxMessage
from tests.apps.notifications.support import delivery_of, endpoint_for, fan_out, make_due

pytestmark = pytest.mark.django_db


def _path() -> str:
    return f"/hook/{uuid.uuid4().hex}"


def _delivery_tasks(delivery: Delivery) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(name=WEBHOOKS_DELIVER, payload__contains=f"[{delivery.pk}]")
                .order_by("id"))


def test_a_delivery_verifies_with_the_standardwebhooks_package(user, receiver):
    path = _path()
    endpoint, secret = endpoint_for(user, receiver.url(path), event_types=["order.*"],
                                    headers={"X-Tenant": "acme"})
    message_id = fan_out(payload={"order_id": 7, "sku": "tea"})
    delivery = delivery_of(message_id, endpoint)
    assert [task.dedup_key.split(":")[0] for task in _delivery_tasks(delivery)] == ["webhooks.deliver"]

    assert delivery_attempt(delivery_id=delivery.pk) == "sent"
    assert delivery_attempt(delivery_id=delivery.pk) == "already-succeeded"  # a redelivered task sends nothing

    (request,) = receiver.at(path)
    body = Webhook(secret).verify(request.body, request.headers)
    assert body["type"] == "order.placed" and body["data"] == {"order_id": 7, "sku": "tea"}
    assert body["timestamp"].endswith("Z")
    assert request.headers["webhook-id"] == message_id
    assert request.headers["X-Tenant"] == "acme"
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint_for(user, receiver.url(path))[1]).verify(request.body, request.headers)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("succeeded", 1, 200)
    (attempt,) = Attempt.objects.filter(delivery=delivery)
    assert attempt.status_code == 200 and attempt.response_body == "ok"


def test_only_matching_enabled_endpoints_get_a_delivery(user):
    placed, _ = endpoint_for(user, "http://127.0.0.1:9/placed", event_types=["order.placed"])
    everything, _ = endpoint_for(user, "http://127.0.0.1:9/all")
    cancelled, _ = endpoint_for(user, "http://127.0.0.1:9/cancelled", event_types=["order.cancelled"])
    off, _ = endpoint_for(user, "http://127.0.0.1:9/off")
    Endpoint.objects.filter(pk=off.pk).update(enabled=False)

    message_id = fan_out("order.placed")

    assert set(Delivery.objects.filter(message_id=message_id).values_list("endpoint_id", flat=True)) == {
        placed.pk, everything.pk}
    confirmed = fan_out("order.confirmed")
    assert list(Delivery.objects.filter(message_id=confirmed).values_list("endpoint_id", flat=True)) == [everything.pk]
    assert not Delivery.objects.filter(endpoint=cancelled).exists()


def test_two_secrets_sign_during_the_grace_period_then_only_the_new_one(user, receiver, settings):
    path = _path()
    endpoint, old = endpoint_for(user, receiver.url(path))
    new = endpoint_secret_rotate(endpoint_id=endpoint.pk)
    delivery_attempt(delivery_id=delivery_of(fan_out(), endpoint).pk)

    request = receiver.at(path)[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(request.body, request.headers)
    Webhook(new).verify(request.body, request.headers)

    Endpoint.objects.filter(pk=endpoint.pk).update(previous_secret_until=timezone.now() - timedelta(seconds=1))
    delivery_attempt(delivery_id=delivery_of(fan_out(), endpoint).pk)
    request = receiver.at(path)[-1]
    Webhook(new).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)


def test_a_500_is_retried_on_the_schedule_and_exhaustion_fails_the_delivery(user, receiver, settings):
    settings.WEBHOOKS_RETRY_SCHEDULE = [0, 60, 120]
    path = _path()
    receiver.script(path, (500, {}), (500, {}), (500, {}))
    endpoint, _ = endpoint_for(user, receiver.url(path))
    delivery = delivery_of(fan_out(), endpoint)

    assert delivery_attempt(delivery_id=delivery.pk) == "retry"
    assert delivery_attempt(delivery_id=delivery.pk) == "not-due"  # the retry waits for its due time
    delivery.refresh_from_db()
    retry = _delivery_tasks(delivery)[-1]
    assert retry.available_at >= retry.created_at + timedelta(seconds=54)  # 60 s less the jitter
    assert delivery.next_attempt_at >= retry.created_at + timedelta(seconds=54)
    make_due(delivery)
    assert delivery_attempt(delivery_id=delivery.pk) == "retry"
    make_due(delivery)
    assert delivery_attempt(delivery_id=delivery.pk) == "failed"

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 3, 500)
    assert len(receiver.at(path)) == 3
    assert len({request.headers["webhook-id"] for request in receiver.at(path)}) == 1
    assert Attempt.objects.filter(delivery=delivery, status_code=500).count() == 3


def test_410_disables_the_endpoint_at_once(user, receiver):
    path = _path()
    receiver.script(path, (410, {}))
    endpoint, _ = endpoint_for(user, receiver.url(path))
    delivery = delivery_of(fan_out(), endpoint)

    assert delivery_attempt(delivery_id=delivery.pk) == "failed"

    endpoint.refresh_from_db()
    assert not endpoint.enabled and "410" in endpoint.disabled_reason
    assert fan_out() and not Delivery.objects.filter(endpoint=endpoint).exclude(pk=delivery.pk).exists()


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(user, receiver, settings, status):
    settings.WEBHOOKS_RETRY_SCHEDULE = [0, 1, 3600]
    path = _path()
    receiver.script(path, (status, {"Retry-After": "600"}))
    endpoint, _ = endpoint_for(user, receiver.url(path))
    delivery = delivery_of(fan_out(), endpoint)

    assert delivery_attempt(delivery_id=delivery.pk) == "retry"

    retry = _delivery_tasks(delivery)[-1]
    assert retry.available_at >= retry.created_at + timedelta(seconds=600)
    assert next_delay(attempts=1, retry_after=10**6) == 3600  # never past the schedule's longest wait


def test_a_refused_address_is_never_contacted(user, receiver, settings):
    path = _path()
    endpoint, _ = endpoint_for(user, receiver.url(path))
    delivery = delivery_of(fan_out(), endpoint)
    settings.WEBHOOKS_ALLOW_PRIVATE_HOSTS = False  # as if the host's DNS answer changed to a private address

    assert delivery_attempt(delivery_id=delivery.pk) == "failed"

    assert receiver.at(path) == []
    delivery.refresh_from_db()
    assert "Refused" in delivery.last_error and "loopback" in delivery.last_error


def test_an_endpoint_failing_for_the_disable_period_is_disabled_and_its_owner_emailed(user, receiver, settings):
    settings.WEBHOOKS_DISABLE_AFTER_SECONDS = 3600
    user.email = "alice@example.com"
    user.save()
    path = _path()
    receiver.script(path, (500, {}), (500, {}))
    endpoint, _ = endpoint_for(user, receiver.url(path))

    delivery_attempt(delivery_id=delivery_of(fan_out(), endpoint).pk)
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since is not None  # the clock started, not run out

    Endpoint.objects.filter(pk=endpoint.pk).update(failing_since=Now() - timedelta(seconds=3601))  # compressed clock
    delivery_attempt(delivery_id=delivery_of(fan_out(), endpoint).pk)

    endpoint.refresh_from_db()
    assert not endpoint.enabled and "WEBHOOKS_DISABLE_AFTER_SECONDS" in endpoint.disabled_reason
    (email,) = Email.objects.filter(template="webhook_endpoint_disabled")
    assert email.to == "alice@example.com"


def test_a_success_stops_the_failure_clock(user, receiver):
    path = _path()
    receiver.script(path, (500, {}))
    endpoint, _ = endpoint_for(user, receiver.url(path))
    delivery = delivery_of(fan_out(), endpoint)
    delivery_attempt(delivery_id=delivery.pk)
    make_due(delivery)
    assert delivery_attempt(delivery_id=delivery.pk) == "sent"

    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_an_encrypted_event_stays_encrypted(user, receiver, settings):
    settings.OUTBOX_ENCRYPTED_TOPICS = ["order.placed"]
    path = _path()
    endpoint, secret = endpoint_for(user, receiver.url(path))

    message_id = fan_out(payload={"order_id": 9, "sku": "secret-sku"})

    message = Message.objects.get(pk=message_id)
    assert message.encrypted and "secret-sku" not in message.payload
    delivery = delivery_of(message_id, endpoint)
    assert all("secret-sku" not in task.payload for task in _delivery_tasks(delivery))
    delivery_attempt(delivery_id=delivery.pk)
    (request,) = receiver.at(path)
    assert Webhook(secret).verify(request.body, request.headers)["data"]["sku"] == "secret-sku"
    stored = Endpoint.objects.get(pk=endpoint.pk)
    assert secret not in stored.secret and secret[6:] not in stored.secret  # the secret at rest is a Fernet token


def test_the_rate_limit_postpones_without_spending_an_attempt(user, receiver):
    path = _path()
    endpoint, _ = endpoint_for(user, receiver.url(path), rate_limit_per_second=1)
    first, second = (delivery_of(fan_out(), endpoint) for _ in range(2))

    assert delivery_attempt(delivery_id=first.pk) == "sent"
    assert delivery_attempt(delivery_id=second.pk) == "rate-limited"

    second.refresh_from_db()
    assert (second.state, second.attempts) == ("pending", 0)
    assert len(receiver.at(path)) == 1
    assert ":limited:" in _delivery_tasks(second)[-1].dedup_key


def test_the_guard_refuses_a_private_url_before_connecting(settings):
    from apps.notifications.client import webhook_session

    settings.WEBHOOKS_ALLOW_PRIVATE_HOSTS = False
    with pytest.raises(UrlRefused):
        webhook_session().post("http://127.0.0.1:9/x", data=json.dumps({}))


def test_the_purge_keeps_recent_and_in_flight_messages(user, settings):
    from apps.notifications.services import webhook_messages_purge

    endpoint_for(user, "http://127.0.0.1:9/purge")
    old_done, old_pending, recent = (fan_out() for _ in range(3))
    Delivery.objects.filter(message_id__in=[old_done, recent]).update(state="succeeded")
    Message.objects.filter(pk__in=[old_done, old_pending]).update(created_at=timezone.now() - timedelta(days=31))

    webhook_messages_purge()

    assert set(Message.objects.values_list("pk", flat=True)) == {uuid.UUID(old_pending), uuid.UUID(recent)}


def test_an_oversized_answer_is_cut_off_and_only_its_first_2_kib_is_kept(user, receiver, settings):
    settings.WEBHOOKS_MAX_RESPONSE_BYTES = 4096
    path = _path()
    receiver.script(path, (500, {}, b"\x00" + b"y" * 3000), (200, {}, b"x" * 5000))
    endpoint, _ = endpoint_for(user, receiver.url(path))
    delivery = delivery_of(fan_out(), endpoint)

    assert delivery_attempt(delivery_id=delivery.pk) == "retry"
    make_due(delivery)
    assert delivery_attempt(delivery_id=delivery.pk) == "sent"  # the status counts, though the body was cut off

    kept, too_large = Attempt.objects.filter(delivery=delivery).order_by("id")
    assert kept.status_code == 500 and kept.response_body == "\ufffd" + "y" * 2047
    assert too_large.status_code == 200 and "ResponseTooLarge" in too_large.error and too_large.response_body == ""


def test_an_attempt_that_cannot_be_made_is_recorded_as_a_failure(user, receiver, settings):
    endpoint, _ = endpoint_for(user, receiver.url(_path()))
    delivery = delivery_of(fan_out(), endpoint)
    settings.FERNET_KEYS = [Fernet.generate_key().decode()]  # the key that sealed the secret is gone

    assert delivery_attempt(delivery_id=delivery.pk) == "retry"

    delivery.refresh_from_db()
    assert delivery.state == "pending" and "EncryptionUnavailable" in delivery.last_error
