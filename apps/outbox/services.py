"""Operator services over outbox rows: retry, discard, re-drive to a subscriber, purge, key rotation.

Retry, discard and re-drive are operator actions: each records who did it, to which rows and why in the
operator audit log (apps.core.audit), in the same transaction as the change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from apps.core.audit import Actor, operator_action_record
from apps.core.crypto import EncryptionUnavailable, decrypt_text, rotate_token
from apps.core.errors import Conflict, InvalidInput, NotFound
from apps.core.purging import delete_in_batches
from apps.core.task_contract import OUTBOX_DELIVER_EVENT
from apps.outbox.delivery import inbox_claim
from apps.outbox.messages import ClaimedRow, event_envelope
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.registry import subscriber_named, subscribers_for
from apps.outbox.writing import enqueue_carrying

RETRYABLE = (OutboxMessage.Status.DEAD, OutboxMessage.Status.DISCARDED)
DISCARDABLE = (OutboxMessage.Status.PENDING, OutboxMessage.Status.DEAD)
TARGET_TYPE = "outbox.outboxmessage"


def outbox_retry(*, message_ids: list[int] | None = None, all_dead: bool = False, actor: Actor,
                 reason: str = "") -> int:
    """Put dead (or discarded) messages back to pending, attempts reset, audited; returns how many."""
    with transaction.atomic():
        if all_dead:  # discarded messages were stopped on purpose: only an explicit id revives them
            queryset = OutboxMessage.objects.filter(status=OutboxMessage.Status.DEAD)
        else:
            queryset = OutboxMessage.objects.filter(status__in=RETRYABLE, id__in=message_ids or [])
        # Locked, so the audit names exactly the rows this update changes.
        ids = list(queryset.select_for_update().order_by("id").values_list("id", flat=True))
        count = OutboxMessage.objects.filter(id__in=ids).update(
            status=OutboxMessage.Status.PENDING, attempts=0, available_at=timezone.now()
        )
        operator_action_record(actor=actor, action="outbox.retry", target_type=TARGET_TYPE, target_ids=ids,
                               reason=reason)
        return count


def outbox_retry_one(*, message_id: int, actor: Actor, reason: str = "") -> OutboxMessage:
    """Retry one message; 404 if missing, 409 if it is not dead or discarded."""
    message = _get(message_id)
    if not outbox_retry(message_ids=[message_id], actor=actor, reason=reason):
        raise Conflict(f"Message {message_id} is {message.status}; only dead or discarded messages can be retried.")
    message.refresh_from_db()
    return message


def outbox_discard(*, message_ids: list[int], actor: Actor, reason: str = "") -> int:
    """Mark pending or dead messages discarded (kept for audit, never relayed), audited; returns how many."""
    with transaction.atomic():
        ids = list(
            OutboxMessage.objects.select_for_update().filter(id__in=message_ids, status__in=DISCARDABLE)
            .order_by("id").values_list("id", flat=True)
        )
        count = OutboxMessage.objects.filter(id__in=ids).update(status=OutboxMessage.Status.DISCARDED)
        operator_action_record(actor=actor, action="outbox.discard", target_type=TARGET_TYPE, target_ids=ids,
                               reason=reason)
        return count


def outbox_discard_one(*, message_id: int, actor: Actor, reason: str = "") -> OutboxMessage:
    """Discard one message; 404 if missing, 409 if it was already published or discarded."""
    message = _get(message_id)
    if not outbox_discard(message_ids=[message_id], actor=actor, reason=reason):
        raise Conflict(f"Message {message_id} is {message.status}; only pending or dead messages can be discarded.")
    message.refresh_from_db()
    return message


@dataclass(frozen=True)
class Redrive:
    """A re-drive: the event, the subscriber, the delivery row written for it, and whether an inbox entry went."""

    event: OutboxMessage
    subscriber: str
    delivery: OutboxMessage
    inbox_entry_removed: bool


def outbox_redrive(*, message_id: int, subscriber: str, actor: Actor, reason: str) -> Redrive:
    """Deliver a published event to ``subscriber`` once more, bypassing its inbox entry; audited, reason required.

    404 if the row does not exist (published rows are purged after OUTBOX_RETENTION_DAYS), 409 if it
    is not a published event, 400 if ``subscriber`` does not subscribe to its topic.
    """
    reason = _required_reason(reason)
    with transaction.atomic():
        # Locked: two re-drives of one event queue one delivery each, in turn.
        event = OutboxMessage.objects.select_for_update().filter(pk=message_id).first()
        if event is None:
            raise NotFound(f"Outbox message {message_id} not found (published messages are deleted after "
                           f"{settings.OUTBOX_RETENTION_DAYS} days, OUTBOX_RETENTION_DAYS).")
        _check_redrivable(event, subscriber)
        return _redrive(event, subscriber, actor, reason)


def outbox_redrive_many(*, message_ids: Iterable[int], subscriber: str, actor: Actor, reason: str) -> int:
    """Re-drive each published event among ``message_ids`` whose topic ``subscriber`` has; returns how many."""
    reason = _required_reason(reason)
    registered = subscriber_named(subscriber)
    if registered is None:
        raise InvalidInput(f"No subscriber named {subscriber!r}.", errors=[_subscriber_error(subscriber, None)])
    with transaction.atomic():
        events = OutboxMessage.objects.select_for_update().filter(
            id__in=list(message_ids), kind=OutboxMessage.Kind.EVENT, status=OutboxMessage.Status.PUBLISHED,
            name=registered.topic,
        ).order_by("id")
        count = 0
        for event in events:
            _redrive(event, subscriber, actor, reason)
            count += 1
        return count


def redrive_subscribers(*, topics: Iterable[str]) -> list[str]:
    """Names of the subscribers of any of ``topics``: who an event of theirs can be re-driven to."""
    return sorted({sub.name for topic in set(topics) for sub in subscribers_for(topic)})


def _required_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("Say why the event is re-driven.",
                           errors=[{"field": "reason", "message": "This field is required.", "code": "required"}])
    return reason


def _subscriber_error(subscriber: str, topic: str | None) -> dict[str, str]:
    if topic is None:
        return {"field": "subscriber", "message": f"No subscriber named {subscriber!r}.", "code": "unknown"}
    known = ", ".join(sub.name for sub in subscribers_for(topic)) or "none"
    return {"field": "subscriber", "code": "not_subscribed",
            "message": f"{subscriber!r} does not subscribe to {topic!r} (its subscribers: {known})."}


def _check_redrivable(event: OutboxMessage, subscriber: str) -> None:
    if event.kind != OutboxMessage.Kind.EVENT:
        raise Conflict(f"Message {event.pk} is a task ({event.name}), not an event; only events are re-driven "
                       "(retry a dead task instead).")
    if event.status != OutboxMessage.Status.PUBLISHED:
        hint = "the relay will deliver it" if event.status == OutboxMessage.Status.PENDING else "retry it instead"
        raise Conflict(f"Event {event.pk} is {event.status}; only published events are re-driven ({hint}).")
    registered = subscriber_named(subscriber)
    if registered is None:
        error = _subscriber_error(subscriber, None)
        raise InvalidInput(error["message"], errors=[error])
    if registered.topic != event.name:  # a real subscriber, but not of this event: the event is the mismatch
        raise Conflict(_subscriber_error(subscriber, event.name)["message"])


def _redrive(event: OutboxMessage, subscriber: str, actor: Actor, reason: str) -> Redrive:
    # Removing the entry and writing the delivery commit together: the new delivery finds no inbox entry,
    # runs the subscriber, and records a fresh entry (so a broker redelivery of it is still a duplicate).
    # A delivery of this event to this subscriber may be running now, its inbox entry not yet committed,
    # which a DELETE would not see: claiming the same entry first waits for that transaction to end.
    existed = not inbox_claim(consumer=subscriber, message_id=str(event.message_id))
    InboxEntry.objects.filter(consumer=subscriber, message_id=event.message_id).delete()
    delivery = _delivery_write(event, subscriber)
    operator_action_record(
        actor=actor, action="outbox.redrive", target_type=TARGET_TYPE, target_ids=[event.pk], reason=reason,
        details={"subscriber": subscriber, "delivery_id": delivery.pk, "inbox_entry_removed": existed},
    )
    return Redrive(event=event, subscriber=subscriber, delivery=delivery, inbox_entry_removed=existed)


def _delivery_write(event: OutboxMessage, subscriber: str) -> OutboxMessage:
    """Write the outbox.deliver_event row the relay would have sent for this event, rebuilt from the stored row.

    It carries the event's own headers and context (its flags are evaluated for the user who caused
    the event, not for the operator), and an encrypted event's delivery is encrypted too.
    """
    try:
        payload = decrypt_text(event.payload) if event.encrypted else event.payload
        json.loads(payload)
    except EncryptionUnavailable as exc:
        raise Conflict(f"Event {event.pk} cannot be re-driven: {exc.detail}") from exc
    except ValueError as exc:
        raise Conflict(f"Event {event.pk} cannot be re-driven: its payload is not JSON.") from exc
    envelope = event_envelope(ClaimedRow(
        id=event.pk, message_id=str(event.message_id), kind=event.kind, name=event.name, key=event.key,
        queue=event.queue, payload=payload, encrypted=event.encrypted, headers_json=json.dumps(event.headers),
        created_at=event.created_at,
    ))
    return enqueue_carrying(
        task_name=OUTBOX_DELIVER_EVENT, args=[subscriber, json.loads(envelope)], kwargs={}, key=None, queue=None,
        headers=event.headers, context=event.context, encrypt=event.encrypted,
    )


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
