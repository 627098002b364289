"""The relay: claim pending rows, publish them, mark them — one short transaction per batch.

Correctness rules this module keeps:
- Claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so relays never publish the same row
  concurrently; the claim, the broker I/O of that one batch and the marking share one transaction.
- A row is skipped while an earlier pending row of the same key is not in this batch (claimed by
  another relay, or waiting out a retry), so each key reaches the broker in id order, which the
  writers make equal to commit order.
- A row is marked published only after the broker accepted it. A crash before commit rolls the
  claim back and the batch is sent again: at-least-once, duplicates bounded by one batch.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.crypto import decrypt_text
from apps.core.task_contract import OUTBOX_DELIVER_EVENT, TASK_QUEUES
from apps.outbox import metrics
from apps.outbox.messages import ClaimedRow, Outgoing, event_envelope, event_message, task_message
from apps.outbox.models import OutboxMessage
from apps.outbox.registry import subscribers_for
from apps.outbox.transports import Transport

logger = logging.getLogger(__name__)
TABLE = OutboxMessage._meta.db_table

_CLAIM_SQL = f"""
WITH claimed AS (
    SELECT id FROM {TABLE}
    WHERE status = 'pending' AND available_at <= %s
    ORDER BY id LIMIT %s {{lock}}
)
SELECT m.id, m.message_id, m.kind, m.name, m.key, m.queue, m.payload, m.encrypted,
       CAST(m.headers AS TEXT), m.created_at
FROM {TABLE} m JOIN claimed c ON c.id = m.id
WHERE m.key IS NULL OR NOT EXISTS (
    SELECT 1 FROM {TABLE} p
    WHERE p.key = m.key AND p.status = 'pending' AND p.id < m.id AND p.id NOT IN (SELECT id FROM claimed)
)
ORDER BY m.id
"""  # noqa: S608 - the table name is ours; every value is a parameter

# Subscriber deliveries of one event get stable task ids, so a re-sent event re-sends the same tasks.
_DELIVERY_NAMESPACE = uuid.UUID("5d6f1d2e-4a57-4f0c-9a53-0f1f5b7f9c11")


@dataclass
class BatchResult:
    claimed: int = 0
    published: int = 0
    failed: int = 0
    dead: int = 0


def relay_once(transport: Transport, *, batch_size: int | None = None) -> BatchResult:
    """Relay one batch. Raises BrokerUnavailable (nothing marked) when the broker cannot be reached."""
    limit = batch_size or settings.OUTBOX_BATCH_SIZE
    started = time.perf_counter()
    result = BatchResult()
    with transaction.atomic():
        rows = _claim(limit)
        result.claimed = len(rows)
        if not rows:
            return result
        outgoing, dead = _build(rows)
        outcome = transport.send(outgoing) if outgoing else []
        now = timezone.now()
        errors: dict[int, str] = {}
        for message, error in zip(outgoing, outcome, strict=True):
            if error is not None:
                errors.setdefault(message.row_id, error)
        published = [row for row in rows if row.id not in errors and row.id not in dead]
        _mark_published(published, now)
        failed = [row for row in rows if row.id in errors]
        result.dead = _mark_failed(failed, errors, now) + _mark_dead(dead, now)
        result.published, result.failed = len(published), len(failed)
    for row in published:
        metrics.PUBLISHED.labels(row.kind, row.name).inc()
        metrics.COMMIT_TO_PUBLISH_SECONDS.observe(max(0.0, (now - row.created_at).total_seconds()))
    metrics.BATCH_SIZE.observe(result.claimed)
    metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
    return result


def _claim(limit: int) -> list[ClaimedRow]:
    lock = "FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL.format(lock=lock), [timezone.now(), limit])
        fetched = cursor.fetchall()
    rows = []
    for row_id, message_id, kind, name, key, queue, payload, encrypted, headers, created_at in fetched:
        rows.append(ClaimedRow(
            id=row_id, message_id=str(message_id), kind=kind, name=name, key=key, queue=queue,
            payload=payload, encrypted=bool(encrypted), headers=json.loads(headers) if headers else {},
            created_at=_aware(created_at),
        ))
    return rows


def _aware(value):
    if isinstance(value, str):  # SQLite returns text for raw queries
        value = timezone.datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, timezone.utc)


def _build(rows: list[ClaimedRow]) -> tuple[list[Outgoing], dict[int, str]]:
    """Turn rows into broker messages; rows that can never be sent are returned as dead with a reason."""
    outgoing: list[Outgoing] = []
    dead: dict[int, str] = {}
    for row in rows:
        try:
            if row.encrypted:  # decrypted here, where a failure dead-letters only this row
                row.payload = decrypt_text(row.payload)
            if row.kind == OutboxMessage.Kind.EVENT:
                outgoing.extend(_event_messages(row))
            else:
                outgoing.append(_task(row))
        except Undeliverable as exc:
            dead[row.id] = str(exc)
        except Exception as exc:  # a payload that breaks message building must not stop other rows
            dead[row.id] = f"Cannot build message: {type(exc).__name__}: {exc}"
    return outgoing, dead


class Undeliverable(Exception):
    """This row can never be delivered (unknown task, malformed payload)."""


def _event_messages(row: ClaimedRow) -> list[Outgoing]:
    envelope = event_envelope(row)
    messages = [event_message(row, envelope)]
    for sub in subscribers_for(row.name):
        messages.append(task_message(
            row_id=row.id, task_id=str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{row.message_id}:{sub.name}")),
            task_name=OUTBOX_DELIVER_EVENT, queue=TASK_QUEUES[OUTBOX_DELIVER_EVENT],
            args=[sub.name, json.loads(envelope)], kwargs={}, headers=row.headers,
        ))
    return messages


def _task(row: ClaimedRow) -> Outgoing:
    if row.name not in TASK_QUEUES:
        raise Undeliverable(f"Unknown task {row.name!r}: no worker registers it (apps.core.task_contract).")
    try:
        call = json.loads(row.payload)
        args, kwargs = call["args"], call["kwargs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise Undeliverable(f"Malformed task payload: {exc}") from exc
    return task_message(row_id=row.id, task_id=row.message_id, task_name=row.name,
                        queue=row.queue or TASK_QUEUES[row.name], args=args, kwargs=kwargs, headers=row.headers)


def _mark_published(rows: list[ClaimedRow], now) -> None:
    if rows:
        OutboxMessage.objects.filter(id__in=[row.id for row in rows]).update(
            status=OutboxMessage.Status.PUBLISHED, published_at=now, attempts=F("attempts") + 1
        )


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(settings.OUTBOX_BACKOFF_MAX_SECONDS, settings.OUTBOX_BACKOFF_BASE_SECONDS * (2 ** attempt))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def _mark_failed(rows: list[ClaimedRow], errors: dict[int, str], now) -> int:
    dead = 0
    attempts = dict(OutboxMessage.objects.filter(id__in=[row.id for row in rows]).values_list("id", "attempts"))
    for row in rows:
        attempt = attempts[row.id] + 1
        metrics.FAILED.labels(row.kind, row.name).inc()
        if attempt >= settings.OUTBOX_MAX_ATTEMPTS:
            _dead_letter(row, errors[row.id], attempt)
            dead += 1
            continue
        OutboxMessage.objects.filter(id=row.id).update(
            attempts=attempt, last_error=errors[row.id][:2000],
            available_at=now + timedelta(seconds=backoff_seconds(attempt)),
        )
    return dead


def _mark_dead(dead: dict[int, str], now) -> int:
    rows = OutboxMessage.objects.filter(id__in=list(dead))
    for row in rows:
        _dead_letter(row, dead[row.id], row.attempts + 1)
    return len(dead)


def _dead_letter(row, error: str, attempts: int) -> None:
    logger.error("Outbox message %s (%s %s) dead-lettered after %s attempt(s): %s",
                 row.id, row.kind, row.name, attempts, error)
    metrics.DEAD.labels(row.kind, row.name).inc()
    OutboxMessage.objects.filter(id=row.id).update(
        status=OutboxMessage.Status.DEAD, attempts=attempts, last_error=error[:2000]
    )
