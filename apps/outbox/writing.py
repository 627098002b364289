"""publish() and enqueue(): write messages in the caller's transaction.

A message exists if and only if the caller's transaction commits. On PostgreSQL each write also
queues a NOTIFY (once per transaction; PostgreSQL delivers it at commit) so a relay wakes at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from opentelemetry import propagate

from apps.core.crypto import encrypt_text
from apps.core.request_context import get_request_id
from apps.core.task_contract import TASK_QUEUES
from apps.flags.context import current_context
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
    hold_key: bool = False,
) -> OutboxMessage:
    """Record a dispatch of Celery task ``task_name``; ``delay`` is the earliest run, kept in the database.

    A delayed message does not hold back later messages of its ``key`` unless ``hold_key`` is set.
    """
    _check_name(task_name, "task name")
    if task_name not in TASK_QUEUES:
        raise OutboxError(f"Unknown task {task_name!r}: it is not listed in apps.core.task_contract.TASK_QUEUES.")
    text = _serialise({"args": list(args), "kwargs": dict(kwargs or {})})
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)
    if seconds < 0:
        raise OutboxError("delay must not be negative.")
    return _write(kind=OutboxMessage.Kind.TASK, name=task_name, key=key, queue=queue or TASK_QUEUES[task_name],
                  text=text, headers=None, encrypt=False, delay_seconds=seconds, hold_key=hold_key)


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise OutboxError(f"The {what} must be a string of 1 to 200 characters.")


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


def _context_headers(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    propagate.inject(headers)  # W3C traceparent (and tracestate) of the current span, if any
    request_id = get_request_id()
    if request_id:
        headers["request_id"] = request_id
    flags_context = current_context()
    if flags_context:
        # Tasks evaluate flags for the subject of the request that caused them.
        headers["flags_context"] = flags_context
    if extra:
        try:
            json.dumps(dict(extra))
        except (TypeError, ValueError) as exc:
            raise OutboxError(f"Headers are not JSON-serialisable: {exc}") from exc
        headers.update(extra)
    return headers


def _write(*, kind: str, name: str, key: str | None, queue: str, text: str, headers: Mapping[str, Any] | None,
           encrypt: bool, delay_seconds: float = 0, hold_key: bool = False) -> OutboxMessage:
    if not connection.in_atomic_block and not settings.OUTBOX_ALLOW_AUTOCOMMIT:
        raise OutboxError(
            "publish()/enqueue() must run inside transaction.atomic(), so the message commits with your "
            "writes (set OUTBOX_ALLOW_AUTOCOMMIT to allow autocommit writes)."
        )
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
        raise OutboxError("The key must be a string of 1 to 200 characters.")
    now = timezone.now()
    if key is not None:
        _lock_key(key)
    message = OutboxMessage(
        kind=kind, name=name, key=key, queue=queue, payload=encrypt_text(text) if encrypt else text,
        encrypted=encrypt, headers=_context_headers(headers), created_at=now,
        available_at=now + timedelta(seconds=delay_seconds), holds_key=hold_key,
    )
    message.headers["message_id"] = str(message.message_id)
    message.save(force_insert=True)
    _wake_relay()
    return message


def _lock_key(key: str) -> None:
    """Serialise writers of one key, so that per key the id order is the commit order.

    Two transactions writing the same key take this lock in turn; the second allocates its id only
    after the first committed. The lock is transaction-scoped and released at commit or rollback.
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
