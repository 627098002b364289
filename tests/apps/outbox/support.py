"""Helpers shared by the outbox control-plane tests (admin and API)."""

from __future__ import annotations

from django.db import transaction

from apps.outbox import publish
from apps.outbox.models import OutboxMessage

SECRET_TOPIC = "customer.updated"


def event(topic: str = "order.placed", payload=None, *, key: str | None = None) -> OutboxMessage:
    """Publish one event through the real write path."""
    with transaction.atomic():
        return publish(topic, payload if payload is not None else {"n": 1}, key=key)


def stored(**fields) -> OutboxMessage:
    """A row in any state (dead, published…), written directly."""
    defaults = {"kind": "event", "name": "order.placed", "payload": "{}"}
    return OutboxMessage.objects.create(**{**defaults, **fields})
