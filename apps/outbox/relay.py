"""The relay: claim pending rows, publish them, mark them — one short transaction per batch.

Correctness rules this module keeps:
- Claiming uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so relays never publish the same row
  concurrently; the claim, the broker I/O of that one batch and the marking share one transaction.
- Rows are due when ``available_at`` has passed on the DATABASE clock (PostgreSQL's), so
  app servers with skewed clocks agree on what is due.
- A row is held back while an earlier pending row of the same key is not in this batch and is due
  (claimed by another relay), waits out a relay retry (``attempts > 0``) or was written with
  ``hold_key``, so each key reaches the broker in id order, which the writers make equal to commit
  order. A row its writer merely delayed does not hold its key back (docs/outbox.md).
- Once a row of a key fails in a batch, that key's later rows in the batch are not sent and not
  charged an attempt (the transports skip them); they wait behind the failed row.
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
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from apps.core.backoff import full_jitter_delay
from apps.core.crypto import decrypt_text
from apps.core.db import uuid_text
from apps.core.task_contract import OUTBOX_DELIVER_EVENT, TASK_QUEUES
from apps.outbox import metrics
from apps.outbox.messages import ClaimedRow, Outgoing, event_envelope, event_message, short_repr, task_message
from apps.outbox.models import OutboxMessage
from apps.outbox.registry import subscribers_for
from apps.outbox.transports import SKIPPED, UNROUTED, Outcome, Transport

logger = logging.getLogger(__name__)
TABLE = OutboxMessage._meta.db_table

# Columns as text where that is cheaper to load and what the relay needs anyway.
_COLUMNS = {
    "postgresql": "id, message_id::text, kind, name, key, queue, payload, encrypted, headers::text, "
                  "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), context::text",
    "sqlite": "id, message_id, kind, name, key, queue, payload, encrypted, headers, created_at, context",
}
# "Due" is measured on the database clock: statement_timestamp() on PostgreSQL (what Django's Now() is;
# the same in both places of the claim, and later than the writes of a transaction the claim runs in).
# SQLite runs inside this process, on this machine's clock, so it gets that clock's time.
_NOW = {"postgresql": "statement_timestamp()", "sqlite": "%s"}
_CLAIM_SQL = """
WITH claimed AS (
    SELECT {columns} FROM {table}
    WHERE status = 'pending' AND available_at <= {now}
    ORDER BY id LIMIT %s {lock}
)
SELECT c.*, (c.key IS NOT NULL AND EXISTS (
    SELECT 1 FROM (
        SELECT p.id FROM {table} p
        WHERE p.key = c.key AND p.status = 'pending' AND p.id < c.id AND p.id NOT IN (SELECT id FROM claimed)
        {fence}
    ) earlier JOIN {table} e ON e.id = earlier.id
    WHERE e.available_at <= {now} OR e.attempts > 0 OR e.holds_key
)) AS held_back
FROM claimed c ORDER BY c.id
"""
# On PostgreSQL the inner query is fenced (OFFSET 0) so that it stays an index-only scan of the pending-key index: it
# reads (key, id) only, and the columns that decide whether an earlier row blocks are looked up by id
# for the few rows it finds. Unfenced, PostgreSQL may walk a key's whole history through outbox_key.

# Subscriber deliveries of one event get stable task ids, so a re-sent event re-sends the same tasks.
_DELIVERY_NAMESPACE = uuid.UUID("5d6f1d2e-4a57-4f0c-9a53-0f1f5b7f9c11")


@dataclass
class BatchResult:
    locked: int = 0  # rows this cycle locked
    claimed: int = 0  # of those, rows free to publish (not held back for ordering)
    published: int = 0
    failed: int = 0
    skipped: int = 0  # rows of a key that failed earlier in this batch: not sent, not charged
    dead: int = 0
    unroutable: Counter = field(default_factory=Counter)  # events that reached no queue, per topic

    @property
    def held_back(self) -> int:
        """Rows waiting for an earlier row of their key (another relay's, or one being retried)."""
        return self.locked - self.claimed


class Undeliverable(Exception):
    """This row can never be delivered (unknown task, malformed payload)."""


@dataclass
class _Sorted:
    published: list[ClaimedRow]
    failed: list[ClaimedRow]
    skipped: int
    errors: dict[int, str]
    unroutable: Counter


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
        outgoing, groups, dead = _build(rows)
        outcome = transport.send(outgoing, groups) if outgoing else []
        batch = _sort(rows, outgoing, outcome, dead)
        _mark_published([row.id for row in batch.published])
        result.dead = (_mark_failed(batch.failed, batch.errors) if batch.failed else 0) + \
            (_mark_dead(dead) if dead else 0)
        result.published, result.failed, result.skipped = len(batch.published), len(batch.failed), batch.skipped
        result.unroutable = batch.unroutable
    _observe(batch.published, result, started)
    return result


@cache
def _claim_sql(vendor: str) -> str:
    postgresql = vendor == "postgresql"
    return _CLAIM_SQL.format(columns=_COLUMNS[vendor], table=TABLE, now=_NOW[vendor],
                             lock="FOR UPDATE SKIP LOCKED" if postgresql else "",
                             fence="OFFSET 0" if postgresql else "")


def _claim(limit: int) -> tuple[list[ClaimedRow], int]:
    vendor = connection.vendor
    if vendor == "postgresql":
        params: list = [limit]
    else:
        now = timezone.now()
        params = [now, limit, now]
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(vendor), params)
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


def _build(rows: list[ClaimedRow]) -> tuple[list[Outgoing], list[Hashable], dict[int, str]]:
    """Turn rows into broker messages and their ordering groups; rows that can never be sent are dead."""
    outgoing: list[Outgoing] = []
    groups: list[Hashable] = []  # per message: its row's key, or the row id for unkeyed rows
    dead: dict[int, str] = {}
    subscribers: dict[str, list] = {}
    for row in rows:
        try:
            if row.encrypted:  # decrypted here, where a failure dead-letters only this row
                row.payload = decrypt_text(row.payload)
            if row.kind == OutboxMessage.Kind.EVENT:
                if row.name not in subscribers:
                    subscribers[row.name] = subscribers_for(row.name)
                messages = _event_messages(row, subscribers[row.name])
            else:
                messages = [_task(row)]
        except Undeliverable as exc:
            dead[row.id] = str(exc)
            continue
        except Exception as exc:  # a payload that breaks message building must not stop other rows
            dead[row.id] = f"Cannot build message: {type(exc).__name__}: {exc}"
            continue
        outgoing.extend(messages)
        group = row.id if row.key is None else row.key
        groups.extend([group] * len(messages))
    return outgoing, groups, dead


def _sort(rows: list[ClaimedRow], outgoing: list[Outgoing], outcome: list[Outcome], dead: dict[int, str]) -> _Sorted:
    """Which rows were published, which failed (charged), and which wait behind a failed row of their key."""
    errors: dict[int, str] = {}
    unrouted: set[int] = set()
    not_sent: set[int] = set()
    for message, result in zip(outgoing, outcome, strict=True):
        if result is None:
            continue
        if result is UNROUTED:
            unrouted.add(message.row_id)
        elif result is SKIPPED:
            not_sent.add(message.row_id)
        else:
            errors.setdefault(message.row_id, result)
    unroutable: Counter = Counter()
    if unrouted:  # a row reached no queue when none of its messages did (an event without subscribers)
        routed = {message.row_id for message, result in zip(outgoing, outcome, strict=True) if result is None}
        unroutable.update(row.name for row in rows if row.id in unrouted and row.id not in routed)
    if not errors and not not_sent:
        published = [row for row in rows if row.id not in dead] if dead else rows
        return _Sorted(published, [], 0, errors, unroutable)
    published, failed, skipped = [], [], 0
    failed_keys: set[str] = set()
    for row in rows:
        if row.id in dead:
            continue
        if row.key is not None and row.key in failed_keys:
            skipped += 1  # not attempted, or attempted in the same command as the failed row: not its fault
        elif row.id in errors:
            failed.append(row)
            if row.key is not None:
                failed_keys.add(row.key)
        elif row.id in not_sent:
            skipped += 1
        else:
            published.append(row)
    return _Sorted(published, failed, skipped, errors, unroutable)


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
                        argsrepr=_args_summary(row, args), source=row)


def _args_summary(row: ClaimedRow, args: list) -> str:
    # Celery logs argsrepr on every received, retried and failed task: for an encrypted row that would be
    # the decrypted arguments in plain text in the worker's log.
    return "<encrypted>" if row.encrypted else short_repr(tuple(args))


def _mark_published(ids: list[int]) -> None:
    if not ids:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"UPDATE {TABLE} SET status = 'published', published_at = statement_timestamp(), "  # noqa: S608
                "attempts = attempts + 1 WHERE id = ANY(%s)", [ids],
            )
        else:
            placeholders = ",".join(["%s"] * len(ids))
            cursor.execute(
                f"UPDATE {TABLE} SET status = 'published', published_at = %s, attempts = attempts + 1 "  # noqa: S608
                f"WHERE id IN ({placeholders})", [timezone.now(), *ids],
            )


def backoff_seconds(attempt: int) -> float:
    """The outbox's wait before re-trying a message that failed ``attempt`` times (OUTBOX_BACKOFF_* settings)."""
    return full_jitter_delay(attempt, base=settings.OUTBOX_BACKOFF_BASE_SECONDS,
                             cap=settings.OUTBOX_BACKOFF_MAX_SECONDS)


def _mark_failed(rows: list[ClaimedRow], errors: dict[int, str]) -> int:
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
            available_at=Now() + timedelta(seconds=backoff_seconds(attempt)),  # the database clock, like the claim
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


def _observe(published: list[ClaimedRow], result: BatchResult, started: float) -> None:
    # Counted per (kind, name) per batch, not per row: the counters cost a lock each.
    for (kind, name), count in Counter((row.kind, row.name) for row in published).items():
        metrics.PUBLISHED.labels(kind, name).inc(count)
    for topic, count in result.unroutable.items():
        metrics.UNROUTABLE.labels(topic).inc(count)
    now = timezone.now()  # against created_at: assumes the app and database clocks agree (NTP)
    for row in published:
        metrics.COMMIT_TO_PUBLISH_SECONDS.observe(max(0.0, (now - row.created_at).total_seconds()))
    metrics.BATCH_SIZE.observe(result.locked)
    metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
