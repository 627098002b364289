"""Running subscribers effectively once: the inbox claim and the handler commit in one transaction.

A handler that fails raises out of ``event_deliver``; the platform's one task failure policy
(workers/task.py, docs/outbox.md "Task failures") retries the delivery through the outbox and
dead-letters it after OUTBOX_SUBSCRIBER_MAX_ATTEMPTS. Each subscriber retries on its own ordering
key (``delivery_retry_key``), so one failing subscriber never holds back another.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection, transaction

from apps.core.db import uuid_param
from apps.outbox.models import InboxEntry
from apps.outbox.registry import subscriber_named

logger = logging.getLogger(__name__)


class UnknownSubscriber(Exception):
    """No subscriber of that name is registered in this process (a deploy in progress, or a rename)."""


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


def event_deliver(*, subscriber: str, event: dict[str, Any]) -> str:
    """Run ``subscriber`` for ``event`` once: "handled" or "duplicate"; a handler's failure is raised."""
    registered = subscriber_named(subscriber)
    if registered is None:
        raise UnknownSubscriber(f"No subscriber named {subscriber!r} in this process.")
    try:
        with transaction.atomic():
            if not inbox_claim(consumer=subscriber, message_id=event["id"]):
                return "duplicate"
            registered.handler(event)
    except Exception as exc:  # its writes and the inbox row were rolled back; the failure policy retries
        logger.warning("Subscriber %s failed on event %s: %s: %s", subscriber, event.get("id"), type(exc).__name__,
                       exc)
        raise
    return "handled"


def delivery_retry_key(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The ordering key of a delivery's retries: per subscriber and event key, so subscribers stay independent."""
    if len(args) < 2 or not isinstance(args[1], Mapping):  # the relay and the policy send (subscriber, event)
        return None
    subscriber, event = args[0], args[1]
    return f"{subscriber}:{event.get('key') or event.get('id')}"[:200]
