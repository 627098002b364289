"""Insert validated outbox rows: key locks, the batch's INSERTs in one round trip, one wake-up per transaction.

apps/outbox/writing.py validates and serialises; this module only writes. Every write (``publish``,
``enqueue``, their ``_many`` forms, the task failure policy's retries) comes through ``rows_insert``,
so there is one way a row enters the table and one place that keeps the ordering rule: the keys of
a batch are locked (transaction-scoped advisory locks, in lock-id order) before its ids are
allocated, so per key the id order is the commit order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.base import ModelState
from django.db.models.functions import Now

from apps.outbox.errors import OutboxError
from apps.outbox.models import OutboxMessage

NOTIFY_CHANNEL = "taskplane_outbox"
_TABLE = OutboxMessage._meta.db_table
_INSERTED = ("message_id", "kind", "name", "key", "queue", "payload", "encrypted", "headers", "context",
             "dedup_key", "status", "attempts", "last_error", "holds_key")
# One row per statement, sent for a whole batch at once (psycopg executemany in pipeline mode: one
# round trip). Measured on 1,000-row batches it beats one INSERT … SELECT FROM unnest(<arrays>) by
# ~20% and a multi-row VALUES by 2× (tests/benchmarks, docs/benchmarks.md); a single row costs a
# third of the unnest form. Statements run in order, so ids follow the caller's order. Times come
# from the database clock.
_INSERT_SQL = (
    f"INSERT INTO {_TABLE} ({', '.join(_INSERTED)}, available_at) VALUES "  # noqa: S608
    "(%s, %s, %s, %s, %s, %s, %s, %s::text::jsonb, %s::text::jsonb, %s::text, %s, %s, %s, %s, "
    "statement_timestamp() + make_interval(secs => %s::float8)) "
    "RETURNING message_id, id, created_at, available_at"
)
# With a dedup_key: a held key writes nothing and returns nothing (the speculative insertion of ON
# CONFLICT costs a third of a plain insert, so rows without a dedup_key do without it).
_INSERT_ONCE_SQL = _INSERT_SQL.replace(" RETURNING ", " ON CONFLICT (dedup_key) DO NOTHING RETURNING ")
_LOCK_SQL = (
    # Ordered by lock id, not by key: distinct keys can share a lock id, and only one order of the
    # ids themselves rules deadlocks out. The ordered subquery feeds the locks in that order.
    "SELECT pg_advisory_xact_lock(lock_id) FROM (SELECT DISTINCT hashtextextended(k, 7) AS lock_id "
    "FROM unnest(%s::text[]) AS k ORDER BY lock_id) AS ordered"
)


@dataclass(slots=True)
class Row:
    """One validated row: payload, headers and context already serialised (and encrypted if asked)."""

    message_id: uuid.UUID
    kind: str
    name: str
    key: str | None
    queue: str
    payload: str
    encrypted: bool
    headers: dict
    headers_json: str
    context: dict
    context_json: str
    dedup_key: str | None = None
    status: str = OutboxMessage.Status.PENDING
    attempts: int = 0
    last_error: str = ""
    holds_key: bool = False
    delay_seconds: float = 0.0


@dataclass
class _Written:
    """What this transaction already did, kept as an on_commit entry so it lives exactly as long as it.

    Django keeps on_commit callbacks per transaction and drops them with a rolled-back savepoint; a
    PostgreSQL advisory lock or NOTIFY taken inside a savepoint is released with it too. So each
    key lock (and the NOTIFY) records the savepoints open when it was taken and counts only while
    all of them still are; the entry itself goes when the transaction (or its savepoint) ends.
    Savepoints taken with ``transaction.savepoint()`` instead of ``atomic()`` are not tracked by
    Django either: rolling one back can leave a lock counted that PostgreSQL released.
    """

    locked: dict[str, frozenset[str]] = field(default_factory=dict)
    notified: frozenset[str] | None = None

    def __call__(self) -> None:  # the on_commit callback itself does nothing
        return None


def _written(db: BaseDatabaseWrapper) -> _Written | None:
    if not db.in_atomic_block:
        return None
    for _, func, _ in db.run_on_commit:
        if isinstance(func, _Written):
            return func
    state = _Written()
    db.on_commit(state)
    return state


def _open_savepoints(db: BaseDatabaseWrapper) -> frozenset[str]:
    return frozenset(sid for sid in db.savepoint_ids if sid)


def keys_lock(keys: list[str], db: BaseDatabaseWrapper | None = None) -> None:
    """Lock the keys this transaction has not locked yet, in one statement, in the global lock order."""
    db = db or connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql" or not keys:
        return  # SQLite runs one writer at a time (IMMEDIATE transactions), which gives the same guarantee
    state = _written(db)
    if state is None:  # autocommit (OUTBOX_ALLOW_AUTOCOMMIT): the lock ends with the statement, as before
        missing = sorted(set(keys))
    else:
        open_now = _open_savepoints(db)
        missing = sorted({key for key in keys if not (key in state.locked and state.locked[key] <= open_now)})
    if not missing:
        return
    _execute(_LOCK_SQL, [missing], db)
    if state is not None:
        for key in missing:
            state.locked[key] = open_now


def rows_insert(rows: list[Row]) -> list[OutboxMessage]:
    """Insert ``rows`` in order (after locking their keys) and wake the relay; one message per row.

    A row whose ``dedup_key`` is already held writes nothing: its place holds the holder's row.
    """
    db = connections[DEFAULT_DB_ALIAS]  # resolved once: each lookup of django.db.connection costs a few µs
    keys_lock([row.key for row in rows if row.key is not None], db)
    if db.vendor == "postgresql":
        messages = _insert_postgresql(rows, db)
    else:
        messages = _insert_other(rows)
    if any(row.status == OutboxMessage.Status.PENDING for row in rows):
        _wake_relay(db)
    return messages


def _insert_postgresql(rows: list[Row], db: BaseDatabaseWrapper) -> list[OutboxMessage]:
    params = [(row.message_id, row.kind, row.name, row.key, row.queue, row.payload, row.encrypted, row.headers_json,
               row.context_json, row.dedup_key, row.status, row.attempts, row.last_error, row.holds_key,
               row.delay_seconds) for row in rows]
    once = any(row.dedup_key is not None for row in rows)
    returned = _execute_many(_INSERT_ONCE_SQL if once else _INSERT_SQL, params, db)
    inserted = {values[0]: _message(row, *values[1:]) for row, values in zip(rows, returned, strict=True) if values}
    if len(inserted) == len(rows):
        return list(inserted.values())
    return _with_holders(rows, inserted)


def _message(row: Row, pk: int, created_at: datetime, available_at: datetime) -> OutboxMessage:
    """The stored message, built from what was sent and what the INSERT returned (no read back)."""
    values = {"id": pk, "message_id": row.message_id, "kind": row.kind, "name": row.name, "key": row.key,
              "queue": row.queue, "payload": row.payload, "encrypted": row.encrypted, "headers": row.headers,
              "context": row.context, "dedup_key": row.dedup_key, "status": row.status, "attempts": row.attempts,
              "available_at": available_at, "holds_key": row.holds_key, "last_error": row.last_error,
              "created_at": created_at, "published_at": None}
    # What Model.from_db() does, without its per-field setattr loop (a fifth of a publish() in py-spy).
    message = OutboxMessage.__new__(OutboxMessage)
    message._state = ModelState()
    message._state.adding, message._state.db = False, DEFAULT_DB_ALIAS
    message.__dict__.update(values)
    return message


def _with_holders(rows: list[Row], inserted: dict[uuid.UUID, OutboxMessage]) -> list[OutboxMessage]:
    """The inserted messages, with the holder of its dedup_key in place of each row that wrote nothing.

    ``ON CONFLICT DO NOTHING`` waited for a concurrent writer of the same key to commit or roll back
    and never raised, so a duplicate does not break the caller's transaction.
    """
    skipped = [row.dedup_key for row in rows if row.message_id not in inserted]
    holders = {message.dedup_key: message for message in OutboxMessage.objects.filter(dedup_key__in=skipped)}
    messages = []
    for row in rows:
        message = inserted.get(row.message_id) or holders.get(row.dedup_key)
        if message is None:  # only under REPEATABLE READ or SERIALIZABLE: the holder is outside our snapshot
            raise OutboxError(f"dedup_key {row.dedup_key!r} is held by a row this transaction cannot see.")
        messages.append(message)
    return messages


def _model(row: Row) -> OutboxMessage:
    return OutboxMessage(
        message_id=row.message_id, kind=row.kind, name=row.name, key=row.key, queue=row.queue, payload=row.payload,
        encrypted=row.encrypted, headers=row.headers, context=row.context, dedup_key=row.dedup_key,
        status=row.status, attempts=row.attempts, last_error=row.last_error, holds_key=row.holds_key,
        available_at=Now() + timedelta(seconds=row.delay_seconds),
    )


def _insert_other(rows: list[Row]) -> list[OutboxMessage]:
    """SQLite (the embedded default): bulk_create, row by row where a dedup_key may conflict."""
    messages: list[OutboxMessage] = []
    plain: list[OutboxMessage] = []
    for row in rows:
        if row.dedup_key is None:
            plain.append(_model(row))
            continue
        messages.extend(_bulk_create(plain))  # keep the caller's order: rows before this one go first
        plain = []
        OutboxMessage.objects.bulk_create([_model(row)], ignore_conflicts=True)
        messages.extend(_with_holders([row], {}))
    messages.extend(_bulk_create(plain))
    return messages


def _bulk_create(models: list[OutboxMessage]) -> list[OutboxMessage]:
    if not models:
        return []
    created = OutboxMessage.objects.bulk_create(models)
    # available_at was an expression; read back what the database stored, as on PostgreSQL
    stored = dict(OutboxMessage.objects.filter(pk__in=[m.pk for m in created]).values_list("pk", "available_at"))
    for message in created:
        message.available_at = stored[message.pk]
    return created


def _wake_relay(db: BaseDatabaseWrapper) -> None:
    if db.vendor != "postgresql":
        return  # the SQLite relay polls
    state = _written(db)
    if state is not None:
        if state.notified is not None and state.notified <= _open_savepoints(db):
            return  # this transaction already queued a NOTIFY; PostgreSQL delivers one at commit anyway
        state.notified = _open_savepoints(db)
    _execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL], db)


def _execute(sql: str, params: list, db: BaseDatabaseWrapper) -> tuple | None:
    """Run one of this module's few statements as a prepared statement on Django's own connection.

    Django's cursor binds parameters on the client and never prepares, so PostgreSQL parses and
    plans every INSERT again (measured with py-spy and side by side, docs/benchmarks.md); a
    server-binding psycopg cursor on the same connection and transaction prepares each statement
    once per connection (OUTBOX_PREPARED_STATEMENTS). Errors are
    Django's (IntegrityError, ...), as through its cursor. While Django logs queries (DEBUG, or a
    test capturing them) the statement goes through its cursor, so it is logged like any other.
    """
    return _execute_many(sql, [params], db)[0]


def _preparing(raw: psycopg.Connection) -> bool:
    """Whether to prepare our statements on ``raw``, enabling psycopg's preparing for them alone.

    Django opens connections with ``prepare_threshold=None`` (no prepared statements at all, for
    connection poolers). A threshold no query reaches prepares only what asks with ``prepare=True``:
    Django's own (client-binding) cursors never prepare anything either way.
    """
    if not settings.OUTBOX_PREPARED_STATEMENTS:
        return False
    if raw.prepare_threshold is None:
        raw.prepare_threshold = 2**31
    return True


def _execute_many(sql: str, params: list[tuple | list], db: BaseDatabaseWrapper) -> list[tuple | None]:
    """``_execute`` once per parameter set, pipelined (one round trip); the first returned row of each."""
    if db.queries_logged:
        with db.cursor() as cursor:
            results = []
            for one in params:
                cursor.execute(sql, one)
                results.append(cursor.fetchone())
            return results
    db.validate_no_broken_transaction()
    db.ensure_connection()  # outside a transaction (OUTBOX_ALLOW_AUTOCOMMIT) none may be open yet
    prepare = _preparing(db.connection)
    # Django opens its connections with a client-binding cursor factory: ask for a server-binding one.
    with db.wrap_database_errors, psycopg.Cursor(db.connection) as cursor:
        if len(params) == 1:
            cursor.execute(sql, params[0], prepare=prepare)
            return [cursor.fetchone()]
        cursor.executemany(sql, params, returning=True)
        results = []
        while True:
            results.append(cursor.fetchone())
            if not cursor.nextset():
                return results
