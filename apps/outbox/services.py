"""Operator services over outbox rows: retry, discard, purge, key rotation."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from apps.core.crypto import rotate_token
from apps.core.errors import Conflict, NotFound
from apps.core.purging import delete_in_batches
from apps.outbox.models import InboxEntry, OutboxMessage

RETRYABLE = (OutboxMessage.Status.DEAD, OutboxMessage.Status.DISCARDED)


def outbox_retry(*, message_ids: list[int] | None = None, all_dead: bool = False) -> int:
    """Put dead (or discarded) messages back to pending, attempts reset; returns how many."""
    with transaction.atomic():
        if all_dead:  # discarded messages were stopped on purpose: only an explicit id revives them
            queryset = OutboxMessage.objects.filter(status=OutboxMessage.Status.DEAD)
        else:
            queryset = OutboxMessage.objects.filter(status__in=RETRYABLE, id__in=message_ids or [])
        return queryset.update(status=OutboxMessage.Status.PENDING, attempts=0, available_at=timezone.now())


def outbox_retry_one(*, message_id: int) -> OutboxMessage:
    """Retry one message; 404 if missing, 409 if it is not dead or discarded."""
    message = _get(message_id)
    if message.status not in RETRYABLE:
        raise Conflict(f"Message {message_id} is {message.status}; only dead or discarded messages can be retried.")
    outbox_retry(message_ids=[message_id])
    message.refresh_from_db()
    return message


def outbox_discard(*, message_ids: list[int]) -> int:
    """Mark pending or dead messages discarded (kept for audit, never relayed); returns how many."""
    with transaction.atomic():
        return OutboxMessage.objects.filter(
            id__in=message_ids, status__in=(OutboxMessage.Status.PENDING, OutboxMessage.Status.DEAD)
        ).update(status=OutboxMessage.Status.DISCARDED)


def outbox_discard_one(*, message_id: int) -> OutboxMessage:
    """Discard one message; 404 if missing, 409 if it was already published or discarded."""
    message = _get(message_id)
    if not outbox_discard(message_ids=[message_id]):
        raise Conflict(f"Message {message_id} is {message.status}; only pending or dead messages can be discarded.")
    message.refresh_from_db()
    return message


def outbox_purge(*, batch_size: int = 5000, max_batches: int = 100) -> int:
    """Delete published messages older than OUTBOX_RETENTION_DAYS, in small batches; returns how many."""
    cutoff = timezone.now() - timedelta(days=settings.OUTBOX_RETENTION_DAYS)
    expired = OutboxMessage.objects.filter(status=OutboxMessage.Status.PUBLISHED, published_at__lt=cutoff)
    return delete_in_batches(expired, batch_size=batch_size, max_batches=max_batches)


def inbox_purge(*, batch_size: int = 5000, max_batches: int = 100) -> int:
    """Delete inbox entries older than OUTBOX_INBOX_RETENTION_DAYS (database clock), in batches; returns how many.

    The retention outlasts every way a handled message can arrive again (settings/base.py checks it),
    so a purged entry can no longer let a duplicate through.
    """
    cutoff = Now() - timedelta(days=settings.OUTBOX_INBOX_RETENTION_DAYS)
    return delete_in_batches(InboxEntry.objects.filter(processed_at__lt=cutoff), batch_size=batch_size,
                             max_batches=max_batches)


def outbox_rotate_keys(*, batch_size: int = 500) -> int:
    """Re-encrypt every encrypted payload with the newest FERNET_KEYS key; returns how many rows."""
    rotated = 0
    last_id = 0
    while True:
        with transaction.atomic():
            rows = list(
                OutboxMessage.objects.select_for_update().filter(encrypted=True, id__gt=last_id)
                .order_by("id")[:batch_size]
            )
            if not rows:
                return rotated
            for row in rows:
                row.payload = rotate_token(row.payload)
            OutboxMessage.objects.bulk_update(rows, ["payload"])
            rotated += len(rows)
            last_id = rows[-1].id


def _get(message_id: int) -> OutboxMessage:
    message = OutboxMessage.objects.filter(pk=message_id).first()
    if message is None:
        raise NotFound(f"Outbox message {message_id} not found.")
    return message
