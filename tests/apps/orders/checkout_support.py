"""Helpers of the checkout tests: place an order and run its saga in-process, as the worker would."""

from __future__ import annotations

import json

from django.db import connection

from apps.orders.models import Order, Product
from apps.orders.services import order_place
from apps.outbox.delivery import event_deliver
from apps.outbox.models import OutboxMessage
from apps.sagas.models import SagaInstance
from tests.apps.sagas.support import run_scheduled

START_CHECKOUT = "orders.start_checkout"


def placed_event(order: Order) -> dict:
    """The order.placed event of ``order``, as the relay hands it to subscribers."""
    row = OutboxMessage.objects.get(name="order.placed", key=f"order:{order.pk}")
    return {"id": str(row.message_id), "topic": row.name, "key": row.key, "payload": json.loads(row.payload),
            "headers": {}}


def checkout(user, sku: str = "BOOK-1", quantity: int = 1, *, steps: int | None = None) -> tuple[Order, SagaInstance]:
    """Place an order, deliver its order.placed to orders.start_checkout, run the saga's steps (or ``steps``)."""
    order = order_place(owner=user, sku=sku, quantity=quantity)
    assert event_deliver(subscriber=START_CHECKOUT, event=placed_event(order)) == "handled"
    saga = SagaInstance.objects.get(name="orders.checkout", key=str(order.pk))
    return Order.objects.get(pk=order.pk), run_scheduled(saga, only=steps)


def deliver_published(topic: str, subscriber: str) -> None:
    """Hand every outbox event of ``topic`` to ``subscriber`` (inbox-deduplicated), as the relay would."""
    for row in OutboxMessage.objects.filter(name=topic).order_by("id"):
        event = {"id": str(row.message_id), "topic": row.name, "key": row.key, "payload": json.loads(row.payload),
                 "headers": {}}
        event_deliver(subscriber=subscriber, event=event)


def expire_open_attempts(saga: SagaInstance) -> None:
    """Move the deadline of the saga's open attempts into the past (as if the time had passed)."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE sagas_sagastepattempt SET deadline_at = statement_timestamp() - interval '1 second' "
                       "WHERE instance_id = %s AND state IN ('scheduled', 'running', 'waiting')", [saga.pk])


def stock(sku: str) -> int:
    return Product.objects.get(sku=sku).stock


def published(topic: str) -> list[dict]:
    return [json.loads(payload) for payload in
            OutboxMessage.objects.filter(name=topic).order_by("id").values_list("payload", flat=True)]
