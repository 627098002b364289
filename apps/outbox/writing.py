"""publish() and enqueue(), one message or many: validate, then write in the caller's transaction.

A message exists if and only if the caller's transaction commits. On PostgreSQL each write also
queues a NOTIFY (once per transaction; PostgreSQL delivers it at commit) so a relay wakes at once.
Row times come from the database clock. ``headers`` are public (they travel with an event to every
consumer, docs/outbox.md); the ambient context of the registered carriers goes to the internal
``context`` column, which only Taskplane's own task messages carry.

``publish_many``/``enqueue_many`` validate every message before writing any (one bad message
rejects the batch), read the ambient headers and context once, and write the batch with one
multi-row INSERT; ``publish``/``enqueue`` are batches of one through the same path
(apps/outbox/inserting.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from opentelemetry import propagate

from apps.core.context_carriers import carriers_capture
from apps.core.crypto import encrypt_text
from apps.core.request_context import get_request_id
from apps.core.task_contract import TASK_QUEUES
from apps.outbox.errors import OutboxError
from apps.outbox.inserting import NOTIFY_CHANNEL, Row, keys_lock, rows_insert
from apps.outbox.models import OutboxMessage

__all__ = ["NOTIFY_CHANNEL", "Dispatch", "Event", "dispatch_check", "enqueue", "enqueue_carrying", "enqueue_many",
           "lock_keys", "publish", "publish_many"]
_EVENT, _TASK = OutboxMessage.Kind.EVENT, OutboxMessage.Kind.TASK
_dumps = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class Event:
    """An integration event for ``publish_many``: the arguments of ``publish()``."""

    topic: str
    payload: Any
    key: str | None = None
    headers: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task dispatch for ``enqueue_many``: the arguments of ``enqueue()``.

    ``carriers`` adds (or overrides) carrier values in this row's internal context only, e.g. the
    schedule fire a row stands for, where ``enqueue()`` would bind a carrier around the call.
    """

    task: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] | None = None
    key: str | None = None
    queue: str | None = None
    delay: timedelta | float | None = None
    dedup_key: str | None = None
    hold_key: bool = False
    message_id: uuid.UUID | None = None
    carriers: Mapping[str, Any] | None = None


def publish(
    topic: str, payload: Any, *, key: str | None = None, headers: Mapping[str, Any] | None = None
) -> OutboxMessage:
    """Record an integration event ``topic`` with a JSON ``payload`` in the current transaction."""
    return publish_many([Event(topic, payload, key, headers)])[0]


def publish_many(events: Iterable[Event]) -> list[OutboxMessage]:
    """Record several events in the current transaction, in order; all or none (validated first)."""
    _check_transaction()
    ambient = _Ambient.capture()
    encrypted_topics = settings.OUTBOX_ENCRYPTED_TOPICS
    limit = settings.OUTBOX_MAX_PAYLOAD_BYTES
    rows = [
        _row(kind=_EVENT, name=event.topic, key=event.key, queue="", text=_serialise(event.payload, limit),
             encrypt=event.topic in encrypted_topics, headers=ambient.headers_with(event.headers),
             context_json=ambient.context_json, context=ambient.context)
        for event in _checked_events(events)
    ]
    return rows_insert(rows) if rows else []


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
    return enqueue_many([Dispatch(task_name, args, kwargs, key, queue, delay, dedup_key, hold_key, message_id)])[0]


def enqueue_many(dispatches: Iterable[Dispatch]) -> list[OutboxMessage]:
    """Record several task dispatches in the current transaction, in order; all or none (validated first)."""
    _check_transaction()
    ambient = _Ambient.capture()
    limit = settings.OUTBOX_MAX_PAYLOAD_BYTES
    rows = [_dispatch_row(dispatch, ambient, limit) for dispatch in dispatches]
    return rows_insert(rows) if rows else []


def dispatch_check(dispatch: Dispatch) -> None:
    """Raise OutboxError if ``enqueue_many`` would refuse ``dispatch``; writes nothing.

    Lets a caller batching many dispatches set aside the one the outbox refuses (e.g. a schedule
    whose task left the contract) instead of losing the whole batch.
    """
    _dispatch_row(dispatch, _Ambient.empty(), settings.OUTBOX_MAX_PAYLOAD_BYTES)


def _dispatch_row(dispatch: Dispatch, ambient: _Ambient, limit: int) -> Row:
    if not isinstance(dispatch, Dispatch):
        raise OutboxError(f"enqueue_many() takes Dispatch objects, not {type(dispatch).__name__}.")
    if dispatch.message_id is not None and not isinstance(dispatch.message_id, uuid.UUID):
        raise OutboxError("message_id must be a uuid.UUID.")
    context, context_json = ambient.context, ambient.context_json
    if dispatch.carriers:
        context = {"carriers": {**context.get("carriers", {}), **dispatch.carriers}}
        context_json = _serialise_json(context, "Context is")
    return _task_row(
        dispatch.task, args=dispatch.args, kwargs=dispatch.kwargs, key=dispatch.key, queue=dispatch.queue,
        delay_seconds=_delay_seconds(dispatch.delay), dedup_key=dispatch.dedup_key, limit=limit,
        headers=ambient.headers_with(None), context=context, context_json=context_json, encrypt=False,
        holds_key=dispatch.hold_key, message_id=dispatch.message_id,
    )


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
    _check_transaction()
    context = dict(context)
    row = _task_row(
        task_name, args=args, kwargs=kwargs, key=key, queue=queue, delay_seconds=delay_seconds, dedup_key=dedup_key,
        limit=settings.OUTBOX_MAX_PAYLOAD_BYTES,
        headers=_checked_headers({}, {name: value for name, value in headers.items() if name != "message_id"}),
        context=context, context_json=_serialise_json(context, "Context is"), encrypt=encrypt,
        status=OutboxMessage.Status.DEAD if dead else OutboxMessage.Status.PENDING, attempts=attempts,
        last_error=error[:2000],
    )
    return rows_insert([row])[0]


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
    keys_lock(keys)  # remembered for the transaction: its later writes of these keys take no lock again


def _check_transaction() -> None:
    if not connection.in_atomic_block and not settings.OUTBOX_ALLOW_AUTOCOMMIT:
        raise OutboxError(
            "publish()/enqueue() must run inside transaction.atomic(), so the message commits with your "
            "writes (set OUTBOX_ALLOW_AUTOCOMMIT to allow autocommit writes)."
        )


def _checked_events(events: Iterable[Event]) -> Iterable[Event]:
    for event in events:
        if not isinstance(event, Event):
            raise OutboxError(f"publish_many() takes Event objects, not {type(event).__name__}.")
        _check_name(event.topic, "topic")
        yield event


def _delay_seconds(delay: timedelta | float | None) -> float:
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay or 0)
    if seconds < 0:
        raise OutboxError("delay must not be negative.")
    return seconds


def _task_row(task_name: str, *, args: Sequence[Any], kwargs: Mapping[str, Any] | None, key: str | None,
              queue: str | None, delay_seconds: float, dedup_key: str | None, limit: int, **options: Any) -> Row:
    _check_name(task_name, "task name")
    if task_name not in TASK_QUEUES:
        raise OutboxError(f"Unknown task {task_name!r}: it is not listed in apps.core.task_contract.TASK_QUEUES.")
    if dedup_key is not None and (not isinstance(dedup_key, str) or not 0 < len(dedup_key) <= 200):
        raise OutboxError("The dedup_key must be a string of 1 to 200 characters.")
    text = _serialise({"args": list(args), "kwargs": dict(kwargs or {})}, limit)
    return _row(kind=_TASK, name=task_name, key=key, queue=queue or TASK_QUEUES[task_name], text=text,
                delay_seconds=delay_seconds, dedup_key=dedup_key, **options)


def _row(*, kind: str, name: str, key: str | None, text: str, encrypt: bool, headers: dict[str, Any],
         message_id: uuid.UUID | None = None, **fields: Any) -> Row:
    if key is not None:
        _check_key(key)
    message_id = message_id or uuid.uuid4()
    headers["message_id"] = str(message_id)
    return Row(message_id=message_id, kind=kind, name=name, key=key, payload=encrypt_text(text) if encrypt else text,
               encrypted=encrypt, headers=headers, headers_json=_serialise_json(headers, "Headers are"), **fields)


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise OutboxError(f"The {what} must be a string of 1 to 200 characters.")


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise OutboxError("The key must be a string of 1 to 200 characters.")


def _serialise_json(value: Any, what: str) -> str:
    try:
        return _dumps(value)
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"{what} not JSON-serialisable: {exc}") from exc


def _serialise(payload: Any, limit: int) -> str:
    try:
        text = _dumps(payload)
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"Payload is not JSON-serialisable: {exc}") from exc
    if len(text) > limit:  # the encoder escapes non-ASCII (ensure_ascii): characters are bytes
        raise OutboxError(f"Payload is {len(text)} bytes; the limit is {limit} (OUTBOX_MAX_PAYLOAD_BYTES).")
    return text


def _checked_headers(ambient: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    headers = dict(ambient)
    if extra:
        headers.update(extra)
    return headers


@dataclass(frozen=True, slots=True)
class _Ambient:
    """The public headers (trace context, request id) and internal context of the current call, read once."""

    headers: dict[str, Any]
    context: dict[str, Any]
    context_json: str

    @classmethod
    def capture(cls) -> _Ambient:
        headers: dict[str, Any] = {}
        propagate.inject(headers)  # W3C traceparent (and tracestate) of the current span, if any
        request_id = get_request_id()
        if request_id:
            headers["request_id"] = request_id
        carriers = carriers_capture()
        if not carriers:
            return cls(headers=headers, context={}, context_json="{}")
        context = {"carriers": carriers}
        return cls(headers=headers, context=context, context_json=_serialise_json(context, "Context is"))

    @classmethod
    def empty(cls) -> _Ambient:
        return cls(headers={}, context={}, context_json="{}")

    def headers_with(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """A fresh copy of the ambient headers with the caller's own on top (docs/outbox.md lists them)."""
        return _checked_headers(self.headers, extra)


def enqueue_claim_recheck(task_name: str, *, object_id: int, claim_token: Any, after_seconds: float) -> None:
    """Run ``task_name(object_id)`` again once another worker's live claim can have expired, at most once per
    claim (its token is in the dedup key): a claim whose worker died is then taken over, not lost."""
    with transaction.atomic():
        enqueue(task_name, args=[object_id], delay=after_seconds,
                dedup_key=f"{task_name}:recheck:{object_id}:{claim_token}")
