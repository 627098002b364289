"""Internal headers never leave (issue 15 §10): outside consumers of the events exchange receive the
documented envelope and public headers only, while Taskplane's own tasks still get the context.

Before: the flag evaluation context (user id, groups, staff, hook attributes) was a message header,
spliced into every event envelope and sent as the event's broker headers.
"""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import transaction
from kombu import Connection, Exchange, Queue

from apps.core.api_keys import api_key_create
from apps.core.request_context import set_request_id
from apps.flags.context import set_context
from apps.flags.services import flag_save
from apps.orders.flags import AUTO_RESERVE
from apps.outbox import publish
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.relay import relay_once
from apps.outbox.serving import relay_drain
from apps.outbox.transports import open_transport
from apps.sagas.models import SagaInstance
from tests.helpers import wait_until
from tests.processes import celery_process

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC_HEADERS = {"message_id", "request_id", "traceparent", "tracestate"}
# What the flag context of the test subject contains; none of it may reach an outside consumer.
SUBJECT = {"user_id": "user-7f3a", "groups": ["vip-group-91c"], "staff": True, "plan": "plan-secret-55"}


@contextmanager
def outside_consumer(broker_url: str):
    """A queue bound to the events exchange for every topic, read with kombu as any outside service would."""
    exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic", durable=True)
    with Connection(broker_url, connect_timeout=5) as conn:
        queue = Queue(f"outside-{uuid.uuid4().hex[:12]}", exchange, routing_key="#", durable=False)
        bound = queue(conn.default_channel)
        bound.declare()
        try:
            yield bound
        finally:
            bound.delete()


def _received(queue) -> list:
    messages = []
    while (message := queue.get(no_ack=True)) is not None:
        messages.append(message)
    return messages


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_an_outside_consumer_receives_no_internal_context(broker, settings, broker_redis):
    """Issue 15 §10: envelope headers and broker headers of an event are the public ones only."""
    if broker == "rabbitmq":
        settings.CELERY_BROKER_URL = settings.RABBITMQ_URL
    set_context(dict(SUBJECT))
    set_request_id("req-public-1")
    try:
        with outside_consumer(settings.CELERY_BROKER_URL) as queue:
            with transaction.atomic():
                message = publish("thing.happened", {"n": 1}, key="k", headers={"tenant": "acme"})
            transport = open_transport()
            try:
                assert relay_once(transport).published == 1
            finally:
                transport.close()
            [received] = wait_until(lambda: _received(queue), timeout=10, message="the event at the outside consumer")
    finally:
        set_context(None)
        set_request_id(None)

    envelope = json.loads(received.body)
    assert set(envelope) == {"id", "topic", "key", "payload", "headers", "occurred_at"}
    assert envelope["headers"] == {"message_id": str(message.message_id), "request_id": "req-public-1",
                                   "tenant": "acme"}
    assert set(received.headers) <= PUBLIC_HEADERS | {"tenant"}, received.headers
    everything = json.dumps({"body": envelope, "headers": received.headers, "properties": received.properties})
    for secret in ("user-7f3a", "vip-group-91c", "plan-secret-55", "flags", "carriers"):
        assert secret not in everything
    # Kept inside: the row's context, which only Taskplane's own task messages carry.
    assert OutboxMessage.objects.get(pk=message.pk).context == {"carriers": {"flags": SUBJECT}}


def test_a_subscriber_in_a_real_worker_still_evaluates_flags_for_the_placing_user(user, other_user, tmp_path,
                                                                                  broker_redis):
    """Issue 15 §10: with the context off the public headers, the subscriber task still gets it (internal
    context → worker carriers): the flag is on for alice only, and only alice's order is checked out at once."""
    from rest_framework.test import APIClient

    flag_save(definition={"key": AUTO_RESERVE.key, "enabled": True,
                          "rules": [{"kind": "users", "params": {"user_ids": [str(user.pk)]}}]},
              actor="tests", reason="only alice")
    orders = {}
    with outside_consumer(settings.CELERY_BROKER_URL) as queue:
        with celery_process("worker", tmp_path / "worker.log", "--concurrency", "1", "-Q", "events"):
            for person in (user, other_user):
                client = APIClient()
                client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(username=person.username)[1]}")
                response = client.post("/api/orders/", {"sku": "BOOK-1", "quantity": 1}, format="json")
                assert response.status_code == 201, response.content
                orders[person.pk] = response.json()["id"]

            events = [OutboxMessage.objects.get(name="order.placed", key=f"order:{order_id}").message_id
                      for order_id in orders.values()]

            def both_handled() -> bool:
                relay_drain()
                return InboxEntry.objects.filter(consumer="orders.start_checkout", message_id__in=events).count() == 2

            wait_until(both_handled, timeout=60, message="both deliveries to be handled in the worker")
        received = _received(queue)

    # The subscriber evaluated the flag with each placing request's context: bob's checkout waits for approval.
    approval = {key: data["needs_approval"] for key, data in
                SagaInstance.objects.filter(name="orders.checkout").values_list("key", "input")}
    assert approval == {str(orders[user.pk]): False, str(orders[other_user.pk]): True}
    assert len(received) == 2
    for message in received:
        envelope = json.loads(message.body)
        assert set(envelope["headers"]) <= PUBLIC_HEADERS and set(message.headers) <= PUBLIC_HEADERS
        assert "flags" not in json.dumps(envelope) and "flags" not in json.dumps(message.headers)
