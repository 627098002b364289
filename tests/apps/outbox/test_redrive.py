"""Re-driving a published event to one subscriber (POST /api/outbox/messages/{id}/redrive/ and admin).

Issue 15 §0: a flag-gated subscriber that skipped an event recorded it as handled in its inbox, and
nothing could deliver it again, so orders placed while `orders.auto-reserve` was off stayed pending for
good. A re-drive removes the subscriber's inbox entry and queues the delivery the relay sent, in one
transaction, audited.
"""

from __future__ import annotations

import base64
import json
import threading

import psycopg
import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from apps.core.audit import Actor, Via
from apps.core.groups import OPERATORS
from apps.core.models import OperatorAction
from apps.orders.services import ORDER_PLACED
from apps.outbox import enqueue, publish, registry
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.relay import relay_once
from apps.outbox.services import outbox_redrive
from apps.outbox.transports import open_transport
from tests.apps.outbox.support import SECRET_TOPIC, stored
from tests.authz import key_client, staff_member
from tests.helpers import wait_until

START_CHECKOUT = "orders.start_checkout"
ORDER = {"order_id": 41, "sku": "SKU-R", "quantity": 2, "owner_id": 1}


def redrive_url(message: OutboxMessage) -> str:
    return f"/api/outbox/messages/{message.pk}/redrive/"


@pytest.fixture
def operator():
    return key_client(staff_member("ops", group=OPERATORS))


@pytest.fixture
def transport(broker_redis):
    opened = open_transport()
    yield opened
    opened.close()


def delivered(broker_redis, subscriber: str = START_CHECKOUT) -> list[tuple[list, dict]]:
    """(args, taskplane header) of each outbox.deliver_event message for ``subscriber`` on the events queue,
    oldest first (order.placed's other subscribers get theirs too)."""
    found = []
    for raw in reversed(broker_redis.lrange("events", 0, -1)):
        record = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(record["body"]))
        if args[0] == subscriber:
            found.append((args, record["headers"]["taskplane"]))
    return found


def published(topic: str = ORDER_PLACED, payload: dict | None = None, *, transport) -> OutboxMessage:
    """An event published through the real write path and relayed (its subscribers' deliveries sent)."""
    with transaction.atomic():
        message = publish(topic, payload or ORDER, key="order:41")
    relay_once(transport)
    message.refresh_from_db()
    assert message.status == "published"
    return message


@pytest.mark.django_db
def test_redrive_removes_the_inbox_entry_and_sends_the_delivery_the_relay_sent(operator, transport, broker_redis):
    message = published(transport=transport)
    [original] = delivered(broker_redis)
    InboxEntry.objects.create(consumer=START_CHECKOUT, message_id=message.message_id)  # handled (or skipped)

    response = operator.post(redrive_url(message), {"subscriber": START_CHECKOUT, "reason": "flag back on"},
                             format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["subscriber"] == START_CHECKOUT and body["inbox_entry_removed"] is True
    assert body["event"]["id"] == message.pk
    assert not InboxEntry.objects.filter(consumer=START_CHECKOUT, message_id=message.message_id).exists()
    delivery = OutboxMessage.objects.get(pk=body["delivery"]["id"])
    assert (delivery.kind, delivery.name, delivery.queue, delivery.status) == (
        "task", "outbox.deliver_event", "events", "pending")
    # The event's own headers, not the operator's request; message_id names the row each message came from.
    assert {**delivery.headers, "message_id": None} == {**message.headers, "message_id": None}
    assert delivery.headers["message_id"] == str(delivery.message_id)

    relay_once(transport)
    [_, again] = delivered(broker_redis)
    (args, headers), (original_args, original_headers) = again, original
    assert args == original_args  # the same subscriber and envelope as the first delivery
    assert {**headers, "message_id": None} == {**original_headers, "message_id": None}


@pytest.mark.django_db
def test_redrive_without_an_inbox_entry_still_delivers(operator, transport):
    message = published(transport=transport)

    response = operator.post(redrive_url(message), {"subscriber": START_CHECKOUT, "reason": "never arrived"},
                             format="json")

    assert response.status_code == 202, response.content
    assert response.json()["inbox_entry_removed"] is False
    assert not InboxEntry.objects.filter(consumer=START_CHECKOUT).exists()


def _task_row():
    with transaction.atomic():
        return enqueue("core.heartbeat")


def _purged_event():
    row = stored(status="published")
    OutboxMessage.objects.filter(pk=row.pk).delete()
    return row


@pytest.mark.django_db
@pytest.mark.parametrize(("make", "body", "status", "field"), [
    pytest.param(_purged_event, {}, 404, None, id="purged row"),
    pytest.param(_task_row, {}, 409, None, id="a task row"),
    pytest.param(lambda: stored(status="pending"), {}, 409, None, id="pending event"),
    pytest.param(lambda: stored(status="dead"), {}, 409, None, id="dead event"),
    pytest.param(lambda: stored(status="discarded"), {}, 409, None, id="discarded event"),
    pytest.param(lambda: stored(status="published"), {"subscriber": "nobody.here"}, 400, "subscriber",
                 id="unknown subscriber"),
    pytest.param(lambda: stored(status="published", name="invoice.paid"), {}, 409, None,
                 id="subscriber of another topic"),
    pytest.param(lambda: stored(status="published"), {"reason": None}, 400, "reason", id="no reason"),
    pytest.param(lambda: stored(status="published"), {"reason": "   "}, 400, "reason", id="blank reason"),
    pytest.param(lambda: stored(status="published"), {"subscriber": 7}, 400, "subscriber", id="not a string"),
    pytest.param(lambda: stored(status="published"), {"force": True}, 400, "force", id="unknown field"),
])
def test_bad_redrives_are_clear_problems_that_change_nothing(operator, make, body, status, field):
    message = make()
    InboxEntry.objects.create(consumer=START_CHECKOUT, message_id=message.message_id)
    rows_before = OutboxMessage.objects.count()
    request = {key: value for key, value in {"subscriber": START_CHECKOUT, "reason": "why", **body}.items()
               if value is not None}

    response = operator.post(redrive_url(message), request, format="json")

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    if field:
        assert field in [error["field"] for error in response.json()["errors"]]
    assert OutboxMessage.objects.count() == rows_before
    assert InboxEntry.objects.filter(consumer=START_CHECKOUT, message_id=message.message_id).exists()
    assert not OperatorAction.objects.exists()


@pytest.fixture
def secret_subscriber(encrypted_topic):
    """A subscriber of the encrypted topic, registered for this test only."""
    name = "tests.secret_subscriber"
    registry.subscriber(encrypted_topic, name=name)(lambda event: None)
    yield name
    registry._by_name.pop(name, None)


@pytest.mark.django_db
def test_an_encrypted_event_is_redriven_in_an_encrypted_row(operator, secret_subscriber, transport, broker_redis):
    """Issue 15 §0/§9: a re-drive writes a row, and an encrypted event's row must stay encrypted."""
    message = published(SECRET_TOPIC, {"card": "tok_4242"}, transport=transport)
    [original] = delivered(broker_redis, secret_subscriber)

    response = operator.post(redrive_url(message), {"subscriber": secret_subscriber, "reason": "replay"},
                             format="json")

    assert response.status_code == 202, response.content
    delivery = OutboxMessage.objects.get(pk=response.json()["delivery"]["id"])
    assert delivery.encrypted and "tok_4242" not in delivery.payload
    assert response.json()["delivery"]["payload"] is None  # hidden from non-superusers, like the event's
    relay_once(transport)
    [_, again] = delivered(broker_redis, secret_subscriber)
    assert again[0] == original[0] and again[0][1]["payload"] == {"card": "tok_4242"}


# --- a delivery running while the re-drive commits ---------------------------------------------------------------

def _other_connection() -> psycopg.Connection:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params)


def _waiting_on_a_lock(pid: int) -> bool:
    with _other_connection() as probe:
        row = probe.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return bool(row) and row[0] == "Lock"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("delivery_outcome", ["commits", "rolls back"])
def test_a_redrive_waits_for_a_running_delivery_and_leaves_no_inbox_entry(delivery_outcome):
    """Race: a delivery's inbox entry is inserted but not committed when the re-drive runs.

    A plain DELETE would not see it; the delivery would then commit it and the re-driven delivery would
    be dropped as a duplicate. Both ends of that race are forced here with a second connection.
    """
    message = stored(status="published", payload=json.dumps(ORDER))
    running = _other_connection()
    running.execute("INSERT INTO outbox_inboxentry (consumer, message_id, processed_at) VALUES (%s, %s, now())",
                    [START_CHECKOUT, message.message_id])  # the delivery's claim, its transaction still open
    outcome: dict = {}
    pids: dict = {}

    def redrive() -> None:
        try:
            pids["redrive"] = connection.cursor().connection.info.backend_pid
            outcome["result"] = outbox_redrive(message_id=message.pk, subscriber=START_CHECKOUT,
                                               actor=Actor(name="ops", via=Via.API), reason="race")
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=redrive)
    thread.start()
    try:
        # The re-drive must wait for the running delivery; one that does not finishes here instead.
        wait_until(lambda: not thread.is_alive() or ("redrive" in pids and _waiting_on_a_lock(pids["redrive"])),
                   timeout=30, message="the re-drive to wait on the running delivery's inbox entry")
    finally:
        running.commit() if delivery_outcome == "commits" else running.rollback()
        running.close()
    thread.join(timeout=60)

    assert "error" not in outcome, outcome
    assert outcome["result"].inbox_entry_removed is (delivery_outcome == "commits")
    assert not InboxEntry.objects.filter(consumer=START_CHECKOUT, message_id=message.message_id).exists()
    assert OutboxMessage.objects.filter(name="outbox.deliver_event", status="pending").count() == 1


# --- admin -------------------------------------------------------------------------------------------------------

@pytest.fixture
def admin_operator() -> Client:
    client = Client()
    client.force_login(staff_member("ops", group=OPERATORS))
    return client


CHANGELIST = reverse("admin:outbox_outboxmessage_changelist")


@pytest.mark.django_db
def test_admin_redrive_asks_for_subscriber_and_reason_then_redrives_the_published_events(admin_operator):
    events = [stored(status="published", payload=json.dumps(ORDER)) for _ in range(2)]
    skipped = [stored(status="pending"), stored(kind="task", name="core.heartbeat", status="published")]
    for row in events:
        InboxEntry.objects.create(consumer=START_CHECKOUT, message_id=row.message_id)
    selection = {"action": "redrive", "_selected_action": [row.pk for row in events + skipped]}

    form = admin_operator.post(CHANGELIST, selection)
    assert form.status_code == 200
    assert b"Re-drive 2 of the 4 selected" in form.content and START_CHECKOUT.encode() in form.content

    no_reason = admin_operator.post(CHANGELIST, {**selection, "confirm": "yes", "subscriber": START_CHECKOUT})
    assert no_reason.status_code == 200 and b"This field is required" in no_reason.content
    assert OutboxMessage.objects.filter(name="outbox.deliver_event").count() == 0

    done = admin_operator.post(CHANGELIST, {**selection, "confirm": "yes", "subscriber": START_CHECKOUT,
                                            "reason": "auto-reserve is back on"}, follow=True)

    assert "Re-driven 2 event(s) to orders.start_checkout" in done.content.decode()
    assert OutboxMessage.objects.filter(name="outbox.deliver_event", status="pending").count() == 2
    assert not InboxEntry.objects.exists()
    assert sorted(OperatorAction.objects.filter(action="outbox.redrive").values_list("target_id", flat=True)) == \
        sorted(str(row.pk) for row in events)
