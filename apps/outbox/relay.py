"""The relay: claim pending rows, publish them, mark them — one short transaction per batch.

Correctness rules this module keeps:
- Claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so relays never publish the same row
  concurrently; the claim, the broker I/O of that one batch and the marking share one transaction.
- A row is held back while an earlier pending row of the same key is not in this batch (claimed by
  another relay, or waiting out a retry), so each key reaches the broker in id order, which the
  writers make equal to commit order.
- A row is marked published only after the broker accepted it. A crash before commit rolls the
  claim back and the batch is sent again: at-least-once, duplicates bounded by one batch.

This is the platform's hot path (docs/benchmarks.md): rows are read as text and JSON is spliced,
not parsed and re-serialised.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core.backoff import full_jitter_delay
from apps.core.crypto import decrypt_text
from apps.core.db import uuid_text
from apps.core.task_contract import OUTBOX_DELIVER_EVENT, TASK_QUEUES
from apps.outbox import metrics
from apps.outbox.messages import ClaimedRow, Outgoing, event_envelope, event_message, short_repr, task_message
from apps.outbox.models import OutboxMessage
from apps.outbox.registry import subscribers_for
from apps.outbox.transports import Transport

logger = logging.getLogger(__name__)
TABLE = OutboxMessage._meta.db_table

# Columns as text where that is cheaper to load and what the relay needs anyway.
_COLUMNS = {
    "postgresql": "id, message_id::text, kind, name, key, queue, payload, encrypted, headers::text, "
                  "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), context::text",
    "sqlite": "id, message_id, kind, name, key, queue, payload, encrypted, headers, created_at, context",
}
_CLAIM_SQL = """
WITH claimed AS (
    SELECT {columns} FROM {table}
    WHERE status = 'pending' AND available_at <= %s
    ORDER BY id LIMIT %s {lock}
)
SELECT c.*, (c.key IS NOT NULL AND EXISTS (
    SELECT 1 FROM {table} p
    WHERE p.key = c.key AND p.status = 'pending' AND p.id < c.id AND p.id NOT IN (SELECT id FROM claimed)
)) AS held_back
FROM claimed c ORDER BY c.id
"""

# Subscriber deliveries of one event get stable task ids, so a re-sent event re-sends the same tasks.
_DELIVERY_NAMESPACE = uuid.UUID("5d6f1d2e-4a57-4f0c-9a53-0f1f5b7f9c11")


@dataclass
class BatchResult:
    locked: int = 0  # rows this cycle locked
    claimed: int = 0  # of those, rows free to publish (not held back for ordering)
    published: int = 0
    failed: int = 0
    dead: int = 0

    @property
    def held_back(self) -> int:
        """Rows waiting for an earlier row of their key (another relay's, or one being retried)."""
        return self.locked - self.claimed


class Undeliverable(Exception):
    """This row can never be delivered (unknown task, malformed payload)."""


def relay_once(transport: Transport, *, batch_size: int | None = None) -> BatchResult:
    """Relay one batch. Raises BrokerUnavailable (nothing marked) when the broker cannot be reached."""
    limit = batch_size or settings.OUTBOX_BATCH_SIZE
    started = time.perf_counter()
    result = BatchResult()
    with transaction.atomic():
        rows, result.locked = _claim(limit)
        result.claimed = len(rows)
        if not rows:
            return result
        outgoing, dead = _build(rows)
        outcome = transport.send(outgoing) if outgoing else []
        errors: dict[int, str] = {}
        for message, error in zip(outgoing, outcome, strict=True):
            if error is not None:
                errors.setdefault(message.row_id, error)
        now = timezone.now()
        published = [row for row in rows if row.id not in errors and row.id not in dead]
        _mark_published([row.id for row in published], now)
        failed = [row for row in rows if row.id in errors]
        result.dead = (_mark_failed(failed, errors, now) if failed else 0) + (_mark_dead(dead) if dead else 0)
        result.published, result.failed = len(published), len(failed)
    _observe(published, now, result.locked, started)
    return result


def _claim(limit: int) -> tuple[list[ClaimedRow], int]:
    vendor = connection.vendor
    sql = _CLAIM_SQL.format(columns=_COLUMNS[vendor], table=TABLE,
                            lock="FOR UPDATE SKIP LOCKED" if vendor == "postgresql" else "")
    with connection.cursor() as cursor:
        cursor.execute(sql, [timezone.now(), limit])
        fetched = cursor.fetchall()
    rows = [
        ClaimedRow(id=row_id, message_id=uuid_text(message_id), kind=kind, name=name, key=key, queue=queue,
                   payload=payload, encrypted=bool(encrypted), headers_json=headers or "{}",
                   created_at=_parse_time(created_at), context_json=context or "{}")
        for row_id, message_id, kind, name, key, queue, payload, encrypted, headers, created_at, context, held_back
        in fetched if not held_back
    ]
    return rows, len(fetched)


def _parse_time(value) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    # SQLite returns naive text in UTC (USE_TZ); PostgreSQL returns aware values.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _build(rows: list[ClaimedRow]) -> tuple[list[Outgoing], dict[int, str]]:
    """Turn rows into broker messages; rows that can never be sent are returned as dead with a reason."""
    outgoing: list[Outgoing] = []
    dead: dict[int, str] = {}
    subscribers: dict[str, list] = {}
    for row in rows:
        try:
            if row.encrypted:  # decrypted here, where a failure dead-letters only this row
                row.payload = decrypt_text(row.payload)
            if row.kind == OutboxMessage.Kind.EVENT:
                if row.name not in subscribers:
                    subscribers[row.name] = subscribers_for(row.name)
                outgoing.extend(_event_messages(row, subscribers[row.name]))
            else:
                outgoing.append(_task(row))
        except Undeliverable as exc:
            dead[row.id] = str(exc)
        except Exception as exc:  # a payload that breaks message building must not stop other rows
            dead[row.id] = f"Cannot build message: {type(exc).__name__}: {exc}"
    return outgoing, dead


def _event_messages(row: ClaimedRow, subscribers: list) -> list[Outgoing]:
    envelope = event_envelope(row)
    messages = [event_message(row, envelope)]
    for sub in subscribers:
        messages.append(task_message(
            row_id=row.id, task_id=str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{row.message_id}:{sub.name}")),
            task_name=OUTBOX_DELIVER_EVENT, queue=TASK_QUEUES[OUTBOX_DELIVER_EVENT],
            args_json=f"[{json.dumps(sub.name)},{envelope}]", kwargs_json="{}",
            argsrepr=f"({sub.name!r}, <{row.name} event {row.message_id}>)", source=row,
        ))
    return messages


def _task(row: ClaimedRow) -> Outgoing:
    if row.name not in TASK_QUEUES:
        raise Undeliverable(f"Unknown task {row.name!r}: no worker registers it (apps.core.task_contract).")
    try:
        call = json.loads(row.payload)
        args, kwargs = call["args"], call["kwargs"]
        args_json, kwargs_json = json.dumps(args), json.dumps(kwargs)
    except (ValueError, KeyError, TypeError) as exc:
        raise Undeliverable(f"Malformed task payload: {exc}") from exc
    return task_message(row_id=row.id, task_id=row.message_id, task_name=row.name,
                        queue=row.queue or TASK_QUEUES[row.name], args_json=args_json, kwargs_json=kwargs_json,
                        argsrepr=short_repr(tuple(args)), source=row)


def _mark_published(ids: list[int], now) -> None:
    if not ids:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"UPDATE {TABLE} SET status = 'published', published_at = %s, attempts = attempts + 1 "  # noqa: S608
                "WHERE id = ANY(%s)", [now, ids],
            )
        else:
            placeholders = ",".join(["%s"] * len(ids))
            cursor.execute(
                f"UPDATE {TABLE} SET status = 'published', published_at = %s, attempts = attempts + 1 "  # noqa: S608
                f"WHERE id IN ({placeholders})", [now, *ids],
            )


def backoff_seconds(attempt: int) -> float:
    """The outbox's wait before re-trying a message that failed ``attempt`` times (OUTBOX_BACKOFF_* settings)."""
    return full_jitter_delay(attempt, base=settings.OUTBOX_BACKOFF_BASE_SECONDS,
                             cap=settings.OUTBOX_BACKOFF_MAX_SECONDS)


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


def _mark_dead(dead: dict[int, str]) -> int:
    for row in OutboxMessage.objects.filter(id__in=list(dead)):
        _dead_letter(row, dead[row.id], row.attempts + 1)
    return len(dead)


def _dead_letter(row, error: str, attempts: int) -> None:
    logger.error("Outbox message %s (%s %s) dead-lettered after %s attempt(s): %s",
                 row.id, row.kind, row.name, attempts, error)
    metrics.DEAD.labels(row.kind, row.name).inc()
    OutboxMessage.objects.filter(id=row.id).update(
        status=OutboxMessage.Status.DEAD, attempts=attempts, last_error=error[:2000]
    )


def _observe(published: list[ClaimedRow], now, locked: int, started: float) -> None:
    # Counted per (kind, name) per batch, not per row: the counters cost a lock each.
    for (kind, name), count in Counter((row.kind, row.name) for row in published).items():
        metrics.PUBLISHED.labels(kind, name).inc(count)
    for row in published:
        metrics.COMMIT_TO_PUBLISH_SECONDS.observe(max(0.0, (now - row.created_at).total_seconds()))
    metrics.BATCH_SIZE.observe(locked)
    metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
