"""Fan-out: one domain event becomes one message and one delivery per matching enabled endpoint.

Runs as an outbox subscriber (subscribers.py), so it is inbox-deduplicated and its writes (message,
deliveries, first-attempt task rows) commit in the subscriber's transaction or not at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models.functions import Now
from django.utils import timezone

from apps.notifications.events import event_type_matches
from apps.notifications.models import Delivery, Endpoint
from apps.notifications.services import deliveries_dispatch, message_store


def webhook_fanout(*, event: dict[str, Any]) -> int:
    """Write the event's message and deliveries; returns how many endpoints it goes to (0: nothing written)."""
    topic = event["topic"]
    # Endpoints are few per deployment; matching patterns in Python keeps them simple (prefix.* or exact).
    endpoints = [endpoint for endpoint in Endpoint.objects.filter(enabled=True).only("id", "event_types")
                 if event_type_matches(event_types=endpoint.event_types, topic=topic)]
    if not endpoints:
        return 0
    occurred = event.get("occurred_at")
    message = message_store(message_id=event["id"], topic=topic, payload=event["payload"],
                            occurred_at=datetime.fromisoformat(occurred) if occurred else timezone.now())
    deliveries = Delivery.objects.bulk_create(  # due at once, on the database clock the claim compares with
        [Delivery(message=message, endpoint=endpoint, next_attempt_at=Now()) for endpoint in endpoints])
    deliveries_dispatch(deliveries=deliveries, reason="deliver")
    return len(deliveries)
