"""Helpers of the webhook tests: endpoints, events fanned out as the outbox would, the delivery rows."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from apps.notifications.fanout import webhook_fanout
from apps.notifications.models import Delivery
from apps.notifications.services import endpoint_create


def endpoint_for(owner, url: str, **fields):
    """An endpoint and its secret."""
    return endpoint_create(owner=owner, url=url, **fields)


def fan_out(topic: str = "order.placed", payload: dict | None = None) -> str:
    """Fan out one event as the subscriber does (in one transaction); returns its id (the webhook-id)."""
    event_id = str(uuid.uuid4())
    event = {"id": event_id, "topic": topic, "key": None, "payload": payload or {"order_id": 1, "sku": "tea"},
             "headers": {}, "occurred_at": timezone.now().isoformat()}
    with transaction.atomic():
        webhook_fanout(event=event)
    return event_id


def delivery_of(message_id: str, endpoint) -> Delivery:
    return Delivery.objects.get(message_id=message_id, endpoint=endpoint)


def make_due(delivery: Delivery) -> None:
    """Skip the wait before the next attempt (the compressed clock of service-level tests)."""
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=Now())
