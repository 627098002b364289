"""The write side of the outbox benchmark: publish(), publish_many() and a plain psycopg insert of the same rows.

Every writer writes the same events (tests/benchmarks/outbox_backlog.py's payloads and tenant keys)
into the real outbox table of the scratch database, which each measurement empties first.
"""

from __future__ import annotations

import json
import time
import uuid

import psycopg

from tests.benchmarks.outbox_backlog import TABLE, TOPIC, key_for, payload_for


def publish_eps(*, count: int, keys: int, per_transaction: int) -> float:
    """``publish()`` one event at a time, ``per_transaction`` per transaction; returns events/s."""
    from django.db import transaction

    from apps.outbox import publish

    started = time.perf_counter()
    for first in range(0, count, per_transaction):
        with transaction.atomic():
            for index in range(first, min(count, first + per_transaction)):
                publish(TOPIC, payload_for(index), key=key_for(index, keys))
    return count / (time.perf_counter() - started)


def publish_many_eps(*, count: int, keys: int, per_transaction: int) -> float:
    """``publish_many()`` of ``per_transaction`` events per transaction; returns events/s (building included)."""
    from django.db import transaction

    from apps.outbox.writing import Event, publish_many

    started = time.perf_counter()
    for first in range(0, count, per_transaction):
        with transaction.atomic():
            publish_many([Event(TOPIC, payload_for(index), key=key_for(index, keys))
                          for index in range(first, min(count, first + per_transaction))])
    return count / (time.perf_counter() - started)


def publish_single_tx_eps(*, count: int, keys: int) -> float:
    """``publish()`` of one event per transaction (a request's typical shape); returns events/s."""
    from django.db import transaction

    from apps.outbox import publish

    started = time.perf_counter()
    for index in range(count):
        with transaction.atomic():
            publish(TOPIC, payload_for(index), key=key_for(index, keys))
    return count / (time.perf_counter() - started)


def raw_insert_eps(dsn: str, *, count: int, keys: int, per_transaction: int) -> float:
    """The baseline: psycopg ``executemany`` (pipelined) of the same rows and columns, no locks, no NOTIFY."""
    sql = (f"INSERT INTO {TABLE} (message_id, kind, name, key, queue, payload, encrypted, headers, context, "
           "status, attempts, last_error, holds_key) "
           "VALUES (%s, 'event', %s, %s, '', %s, false, %s::jsonb, '{}'::jsonb, 'pending', 0, '', false)")
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for first in range(0, count, per_transaction):
            rows = []
            for index in range(first, min(count, first + per_transaction)):
                message_id = uuid.uuid4()
                rows.append((message_id, TOPIC, key_for(index, keys),
                             json.dumps(payload_for(index), separators=(",", ":")),
                             json.dumps({"message_id": str(message_id)})))
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(sql, rows)
        seconds = time.perf_counter() - started
    return count / seconds


def truncate(admin: psycopg.Connection) -> None:
    admin.execute(f"TRUNCATE {TABLE}")
