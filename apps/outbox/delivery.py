"""Running subscribers: effectively-once through the inbox, retried through the outbox (never broker ETAs)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from apps.core.db import uuid_param
from apps.core.task_contract import OUTBOX_DELIVER_EVENT
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.registry import subscriber_named
from apps.outbox.relay import backoff_seconds

logger = logging.getLogger(__name__)


def inbox_claim(*, consumer: str, message_id: str) -> bool:
    """Record that ``consumer`` handles ``message_id`` in the current transaction; False if it already did.

    A concurrent duplicate waits on the unique index until the first commits, then sees the conflict.
    """
    table = InboxEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (consumer, message_id, processed_at) VALUES (%s, %s, CURRENT_TIMESTAMP) "  # noqa: S608
            "ON CONFLICT (consumer, message_id) DO NOTHING",
            [consumer, uuid_param(message_id)],
        )
        return cursor.rowcount == 1


def event_deliver(*, subscriber: str, event: dict[str, Any], attempt: int = 1) -> str:
    """Run ``subscriber`` for ``event`` once. Returns "handled", "duplicate", "retry-scheduled" or "dead"."""
    registered = subscriber_named(subscriber)
    if registered is None:
        return _dead_letter(subscriber, event, attempt, f"No subscriber named {subscriber!r} in this process.")
    try:
        with transaction.atomic():
            if not inbox_claim(consumer=subscriber, message_id=event["id"]):
                return "duplicate"
            registered.handler(event)
    except Exception as exc:  # the handler's failure is retried later; its writes were rolled back
        logger.warning("Subscriber %s failed on event %s (attempt %s): %s", subscriber, event.get("id"), attempt, exc,
                       exc_info=True)
        if attempt >= settings.OUTBOX_SUBSCRIBER_MAX_ATTEMPTS:
            return _dead_letter(subscriber, event, attempt, f"{type(exc).__name__}: {exc}")
        from apps.outbox.writing import enqueue

        with transaction.atomic():
            enqueue(OUTBOX_DELIVER_EVENT, args=[subscriber, event], kwargs={"attempt": attempt + 1},
                    key=f"{subscriber}:{event.get('key') or event['id']}",
                    delay=timedelta(seconds=backoff_seconds(attempt)))
        return "retry-scheduled"
    return "handled"


def _dead_letter(subscriber: str, event: dict[str, Any], attempt: int, error: str) -> str:
    """Keep the failed delivery as a dead outbox task row: visible in admin, retryable like any other."""
    import json

    logger.error("Subscriber %s gave up on event %s after %s attempt(s): %s", subscriber, event.get("id"), attempt,
                 error)
    with transaction.atomic():
        OutboxMessage.objects.create(
            kind=OutboxMessage.Kind.TASK, name=OUTBOX_DELIVER_EVENT, key=None, queue="events",
            payload=json.dumps({"args": [subscriber, event], "kwargs": {"attempt": 1}}),
            status=OutboxMessage.Status.DEAD, attempts=attempt, last_error=error[:2000],
            headers=event.get("headers") or {},
        )
    return "dead"
