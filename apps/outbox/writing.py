"""publish() and enqueue(): write messages in the caller's transaction.

A message exists if and only if the caller's transaction commits. On PostgreSQL each write also
queues a NOTIFY (once per transaction; PostgreSQL delivers it at commit) so a relay wakes at once.
Row times come from the database clock. ``headers`` are public (they travel with an event to every
consumer, docs/outbox.md); the ambient context of the registered carriers goes to the internal
``context`` column, which only Taskplane's own task messages carry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models.functions import Now
from opentelemetry import propagate

from apps.core.context_carriers import carriers_capture
from apps.core.crypto import encrypt_text
from apps.core.request_context import get_request_id
from apps.core.task_contract import TASK_QUEUES
from apps.outbox.errors import OutboxError
from apps.outbox.models import OutboxMessage

NOTIFY_CHANNEL = "taskplane_outbox"


def publish(
    topic: str, payload: Any, *, key: str | None = None, headers: Mapping[str, Any] | None = None
) -> OutboxMessage:
    """Record an integration event ``topic`` with a JSON ``payload`` in the current transaction."""
    _check_name(topic, "topic")
    text = _serialise(payload)
    return _write(kind=OutboxMessage.Kind.EVENT, name=topic, key=key, queue="", text=text, headers=headers,
                  encrypt=topic in settings.OUTBOX_ENCRYPTED_TOPICS)


def enqueue(
    task_name: str,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    key: str | None = None,
    queue: str | None = None,
    delay: timedelta | float | None = None,
    dedup_key: str | None = None,
    hold_key: bool = False,
    message_id: uuid.UUID | None = None,
) -> OutboxMessage:
    """Record a dispatch of Celery task ``task_name``; ``delay`` is the earliest run, kept in the database.

    With ``dedup_key`` at most one row holds that key while rows are retained: a later enqueue with
    the same key, in this or any other transaction, writes nothing and returns the row holding it.
    A delayed message does not hold back later messages of its ``key`` unless ``hold_key`` is set.
    ``message_id`` (the Celery task id) may be chosen by the caller, e.g. to store it in a row written
    before this one, instead of updating that row afterwards; it must be new (unique).
    """
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)
    if seconds < 0:
        raise OutboxError("delay must not be negative.")
    if message_id is not None and not isinstance(message_id, uuid.UUID):
        raise OutboxError("message_id must be a uuid.UUID.")
    return _write_task(task_name, args=args, kwargs=kwargs, key=key, queue=queue, delay_seconds=seconds,
                       dedup_key=dedup_key, hold_key=hold_key, message_id=message_id)


def enqueue_carrying(
    *,
    task_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    key: str | None,
    queue: str | None,
    headers: Mapping[str, Any],
    context: Mapping[str, Any],
    encrypt: bool,
    dedup_key: str | None = None,
    error: str = "",
    delay_seconds: float = 0,
    dead: bool = False,
    attempts: int = 0,
) -> OutboxMessage:
    """Write a task row on behalf of an earlier message: its public headers and context, not the ambient ones.

    The task failure policy writes retries and dead letters with it (workers/task.py), and operators
    re-drive events with it (the delivery must run with the event's flag context, not the
    operator's). The row is encrypted when the message it stands for was: a retry, dead letter or
    copy of an encrypted payload is never stored in plaintext. ``dead`` writes it dead (kept, not
    relayed); ``error`` is kept as its last error.
    """
    return _write_task(
        task_name, args=args, kwargs=kwargs, key=key, queue=queue, delay_seconds=delay_seconds, dedup_key=dedup_key,
        headers={name: value for name, value in headers.items() if name != "message_id"}, context=dict(context),
        encrypt=encrypt, status=OutboxMessage.Status.DEAD if dead else OutboxMessage.Status.PENDING,
        attempts=attempts, last_error=error[:2000], ambient_headers=False,
    )


def lock_keys(keys: Iterable[str]) -> None:
    """Take the write locks of several ordering keys at once, in the one global order (issue 15 §7).

    Every keyed write locks its key until the transaction ends. Two transactions that write keys A
    and B in opposite orders can deadlock on those locks; a transaction writing several keys calls
    ``lock_keys`` with all of them before its first write, and then writes them in any order.
    """
    keys = sorted(set(keys))
    for key in keys:
        _check_key(key)
    if not connection.in_atomic_block:
        raise OutboxError("lock_keys() must run inside transaction.atomic(): the locks last until it ends.")
    if connection.vendor != "postgresql" or not keys:
        return  # SQLite runs one writer at a time (IMMEDIATE transactions): nothing to order
    with connection.cursor() as cursor:
        # Ordered by lock id, not by key: distinct keys can share a lock id, and only one order of
        # the ids themselves rules deadlocks out. The ordered subquery feeds the locks in that order.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(lock_id) FROM (SELECT DISTINCT hashtextextended(k, 7) AS lock_id "
            "FROM unnest(%s::text[]) AS k ORDER BY lock_id) AS ordered",
            [keys],
        )


def _write_task(task_name: str, *, args: Sequence[Any], kwargs: Mapping[str, Any] | None, key: str | None,
                queue: str | None, delay_seconds: float, dedup_key: str | None, **options: Any) -> OutboxMessage:
    _check_name(task_name, "task name")
    if task_name not in TASK_QUEUES:
        raise OutboxError(f"Unknown task {task_name!r}: it is not listed in apps.core.task_contract.TASK_QUEUES.")
    if dedup_key is not None and (not isinstance(dedup_key, str) or not 0 < len(dedup_key) <= 200):
        raise OutboxError("The dedup_key must be a string of 1 to 200 characters.")
    text = _serialise({"args": list(args), "kwargs": dict(kwargs or {})})
    options.setdefault("headers", None)
    options.setdefault("encrypt", False)
    return _write(kind=OutboxMessage.Kind.TASK, name=task_name, key=key, queue=queue or TASK_QUEUES[task_name],
                  text=text, delay_seconds=delay_seconds, dedup_key=dedup_key, **options)


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise OutboxError(f"The {what} must be a string of 1 to 200 characters.")


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise OutboxError("The key must be a string of 1 to 200 characters.")


def _serialise(payload: Any) -> str:
    try:
        text = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"Payload is not JSON-serialisable: {exc}") from exc
    if len(text.encode()) > settings.OUTBOX_MAX_PAYLOAD_BYTES:
        raise OutboxError(
            f"Payload is {len(text.encode())} bytes; the limit is {settings.OUTBOX_MAX_PAYLOAD_BYTES} "
            "(OUTBOX_MAX_PAYLOAD_BYTES)."
        )
    return text


def _public_headers(extra: Mapping[str, Any] | None, *, ambient: bool = True) -> dict[str, Any]:
    """The headers docs/outbox.md lists as public: trace context, request id, the caller's own."""
    headers: dict[str, Any] = {}
    if ambient:
        propagate.inject(headers)  # W3C traceparent (and tracestate) of the current span, if any
        request_id = get_request_id()
        if request_id:
            headers["request_id"] = request_id
    if extra:
        try:
            json.dumps(dict(extra))
        except (TypeError, ValueError) as exc:
            raise OutboxError(f"Headers are not JSON-serialisable: {exc}") from exc
        headers.update(extra)
    return headers


def _captured_context() -> dict[str, Any]:
    carriers = carriers_capture()
    return {"carriers": carriers} if carriers else {}


def _write(*, kind: str, name: str, key: str | None, queue: str, text: str, headers: Mapping[str, Any] | None,
           encrypt: bool, delay_seconds: float = 0, dedup_key: str | None = None,
           context: dict[str, Any] | None = None, status: str = OutboxMessage.Status.PENDING, attempts: int = 0,
           last_error: str = "", ambient_headers: bool = True, hold_key: bool = False,
           message_id: uuid.UUID | None = None) -> OutboxMessage:
    if not connection.in_atomic_block and not settings.OUTBOX_ALLOW_AUTOCOMMIT:
        raise OutboxError(
            "publish()/enqueue() must run inside transaction.atomic(), so the message commits with your "
            "writes (set OUTBOX_ALLOW_AUTOCOMMIT to allow autocommit writes)."
        )
    if key is not None:
        _check_key(key)
        _lock_key(key)
    message = OutboxMessage(
        kind=kind, name=name, key=key, queue=queue, payload=encrypt_text(text) if encrypt else text,
        encrypted=encrypt, headers=_public_headers(headers, ambient=ambient_headers),
        context=_captured_context() if context is None else context, dedup_key=dedup_key, status=status,
        attempts=attempts, last_error=last_error, holds_key=hold_key,
    )
    if message_id is not None:
        message.message_id = message_id
    message.headers["message_id"] = str(message.message_id)
    delay = timedelta(seconds=delay_seconds)
    if delay:
        message.available_at = Now() + delay  # created_at and available_at default to the database's now()
    if dedup_key is None:
        message.save(force_insert=True)
        if delay:  # what the INSERT stored: both times come from one statement's now(), created_at is returned
            message.available_at = message.created_at + delay
    else:
        message = _insert_once(message)
    if status == OutboxMessage.Status.PENDING:
        _wake_relay()
    return message


def _insert_once(message: OutboxMessage) -> OutboxMessage:
    """Insert unless a row holds ``message.dedup_key``; return the row that holds it (this one or the other).

    ``ON CONFLICT DO NOTHING`` waits for a concurrent writer of the same key to commit or roll back
    and never raises, so a duplicate does not break the caller's transaction.
    """
    OutboxMessage.objects.bulk_create([message], ignore_conflicts=True)
    stored = OutboxMessage.objects.filter(dedup_key=message.dedup_key).first()
    if stored is None:  # only under REPEATABLE READ or SERIALIZABLE: the holder is outside our snapshot
        raise OutboxError(f"dedup_key {message.dedup_key!r} is held by a row this transaction cannot see.")
    return stored


def _lock_key(key: str) -> None:
    """Serialise writers of one key, so that per key the id order is the commit order.

    Two transactions writing the same key take this lock in turn; the second allocates its id only
    after the first committed. The lock is transaction-scoped and released at commit or rollback
    (re-taking it in the same transaction, e.g. after lock_keys(), returns at once).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", [key])
    # SQLite runs one writer at a time (IMMEDIATE transactions), which gives the same guarantee.


def _notified_marker() -> None:
    """on_commit placeholder whose presence means this transaction already queued a NOTIFY."""


def _wake_relay() -> None:
    if connection.vendor != "postgresql":
        return  # the SQLite relay polls
    # Django keeps on_commit callbacks per transaction and drops them with a rolled-back savepoint,
    # exactly the lifetime of a NOTIFY issued inside it, so the marker tells whether one is queued.
    if connection.in_atomic_block and any(entry[1] is _notified_marker for entry in connection.run_on_commit):
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    if connection.in_atomic_block:
        connection.on_commit(_notified_marker)
