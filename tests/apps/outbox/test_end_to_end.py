"""API → outbox → relay in a real worker kept alive by a real beat → broker → subscriber and outside consumers."""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.db import transaction
from kombu import Connection, Exchange, Queue

from apps.core.models import Heartbeat
from apps.core.task_contract import HEARTBEAT
from apps.orders.models import Order, Reservation
from apps.outbox import enqueue
from apps.outbox.models import InboxEntry, OutboxMessage
from tests.helpers import wait_until
from tests.processes import celery_process

pytestmark = pytest.mark.django_db(transaction=True)

# Beat starts a relay within a second; a short lease keeps the worker's shutdown quick.
RELAY_ENV = {"OUTBOX_RELAY_TICK_SECONDS": "1", "OUTBOX_RELAY_LEASE_SECONDS": "5"}
BROKERS = ["redis", "rabbitmq"]


def _broker_url(broker: str) -> str:
    return {"redis": settings.CELERY_BROKER_URL, "rabbitmq": settings.RABBITMQ_URL}[broker]


@contextmanager
def relay_stack(tmp_path, broker_url: str):
    """A worker on every queue and a beat, both on ``broker_url`` and the test database."""
    with celery_process("worker", tmp_path / "worker.log", "--concurrency", "2", broker_url=broker_url, **RELAY_ENV):
        with celery_process("beat", tmp_path / "beat.log", "--schedule", str(tmp_path / "beat-schedule"),
                            broker_url=broker_url, **RELAY_ENV):
            yield


@contextmanager
def events_consumer(broker_url: str, routing_key: str):
    """A queue bound to the events exchange, as a service outside Taskplane would bind it."""
    # Declared like the relay declares it (durable topic), or RabbitMQ refuses the redeclaration.
    exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic", durable=True)
    with Connection(broker_url, connect_timeout=5) as conn:
        queue = Queue(f"test-e2e-{uuid.uuid4().hex[:12]}", exchange, routing_key=routing_key, durable=False,
                      auto_delete=False)(conn.default_channel)
        queue.declare()
        try:
            yield queue
        finally:
            queue.delete()


def _receive(queue, received: list[dict], wanted_id: str) -> dict | None:
    while (message := queue.get(no_ack=True)) is not None:
        received.append(message.decode())
    return next((envelope for envelope in received if envelope["id"] == wanted_id), None)


@pytest.mark.parametrize("broker", BROKERS)
def test_order_placed_reaches_the_subscriber_and_topic_consumers(broker, api_client, user, tmp_path, broker_redis):
    broker_url = _broker_url(broker)
    request_id = f"e2e-{broker}-{uuid.uuid4().hex[:8]}"
    received: list[dict] = []
    with events_consumer(broker_url, "order.#") as queue, relay_stack(tmp_path, broker_url):
        response = api_client.post("/api/orders/", {"sku": "BOOK-1", "quantity": 2}, format="json",
                                   HTTP_X_REQUEST_ID=request_id)
        assert response.status_code == 201, response.content
        order_id = response.json()["id"]
        event_row = OutboxMessage.objects.get(kind=OutboxMessage.Kind.EVENT, name="order.placed")

        wait_until(lambda: Order.objects.filter(pk=order_id, status=Order.Status.CONFIRMED).exists(), timeout=60,
                   message=f"the checkout of order {order_id} over {broker}")
        envelope = wait_until(lambda: _receive(queue, received, str(event_row.message_id)), timeout=30,
                              message=f"the order.placed envelope on the {broker} topic exchange")

    reservation = Reservation.objects.get(order_id=order_id)
    assert (reservation.sku, reservation.quantity, str(reservation.event_id)) == (
        "BOOK-1", 2, str(event_row.message_id))
    assert InboxEntry.objects.filter(consumer="orders.start_checkout", message_id=event_row.message_id).count() == 1
    event_row.refresh_from_db()
    assert event_row.status == OutboxMessage.Status.PUBLISHED

    assert set(envelope) == {"id", "topic", "key", "payload", "headers", "occurred_at"}
    assert envelope["topic"] == "order.placed"
    assert envelope["key"] == f"order:{order_id}"
    assert envelope["payload"] == {"order_id": order_id, "sku": "BOOK-1", "quantity": 2, "owner_id": user.pk,
                                   "amount_cents": 2500}  # 2 × the seeded catalog's 1250
    assert envelope["headers"]["message_id"] == envelope["id"]
    assert envelope["headers"]["request_id"] == request_id
    assert datetime.fromisoformat(envelope["occurred_at"]) == event_row.created_at
    # Other suites may share the broker and publish order events too: count only ours.
    assert [e["id"] for e in received].count(envelope["id"]) == 1


@pytest.mark.parametrize("broker", BROKERS)
def test_a_delayed_task_runs_after_its_delay_and_not_before(broker, tmp_path, broker_redis):
    broker_url = _broker_url(broker)
    name = f"delayed-{broker}-{uuid.uuid4().hex[:8]}"
    with relay_stack(tmp_path, broker_url):
        # An undelayed task first proves the relay is up, so the delayed one cannot be late merely by start-up.
        with transaction.atomic():
            enqueue(HEARTBEAT, args=[f"{name}-ready"])
        wait_until(lambda: Heartbeat.objects.filter(name=f"{name}-ready").exists(), timeout=30,
                   message="the relay to be running")

        with transaction.atomic():
            row = enqueue(HEARTBEAT, args=[name], delay=timedelta(seconds=2))
        committed = time.monotonic()
        # Watching for an early run over most of the delay (a bounded observation, not a sleep).
        while time.monotonic() - committed < 1.8:
            assert not Heartbeat.objects.filter(name=name).exists(), "the task ran before its delay"
            time.sleep(0.05)
        heartbeat = wait_until(lambda: Heartbeat.objects.filter(name=name).first(), timeout=20,
                               message="the delayed task to run")

    row.refresh_from_db()
    assert row.available_at - row.created_at == timedelta(seconds=2)
    assert row.status == OutboxMessage.Status.PUBLISHED and row.published_at >= row.available_at
    assert heartbeat.beat_at >= row.available_at
