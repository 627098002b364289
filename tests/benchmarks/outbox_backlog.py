"""Backlogs for the outbox benchmark: written through publish(), copied by SQL, retained history, raw baseline.

The first backlog is written through ``apps.outbox.publish`` (the real write path, in
tests/benchmarks/outbox_writes.py); it is kept in a template table so that later runs refill the
outbox with the same rows (fresh ids and message ids)
in a second instead of re-publishing for tens of seconds.
"""

from __future__ import annotations

import time

import psycopg
import redis

from tests.benchmarks.harness import log

TABLE = "outbox_outboxmessage"
TEMPLATE = "bench_backlog"
TOPIC = "bench.event"


def key_for(index: int, keys: int) -> str:
    """Ordering key of the index-th event: tenants, spread round-robin (the hard case for per-key order)."""
    return f"tenant-{index % keys:02d}"


def payload_for(index: int) -> dict:
    """A small, plausible event body (about 110 bytes of JSON)."""
    return {"order_id": 100_000 + index, "customer_id": 5_000 + index % 997, "amount_cents": 1_999 + index % 500,
            "currency": "EUR", "sku": f"SKU-{index % 313:04d}", "quantity": 1 + index % 3}


def save_template(admin: psycopg.Connection) -> int:
    """Keep the pending rows as the template of every later backlog; returns its size."""
    admin.execute(f"DROP TABLE IF EXISTS {TEMPLATE}")
    admin.execute(
        f"CREATE TABLE {TEMPLATE} AS SELECT row_number() OVER (ORDER BY id) AS seq, kind, name, key, queue, "
        f"payload, encrypted, headers FROM {TABLE} WHERE status = 'pending'"
    )
    return admin.execute(f"SELECT count(*) FROM {TEMPLATE}").fetchone()[0]


def refill(admin: psycopg.Connection, *, keyed: bool, truncate: bool = True) -> None:
    """Make the template's rows pending again (new ids, new message ids), then VACUUM ANALYZE.

    Every measured drain starts from the same vacuumed state, so runs compare like with like.
    """
    if truncate:
        admin.execute(f"TRUNCATE {TABLE}")
    admin.execute(
        f"""
        INSERT INTO {TABLE} (message_id, kind, name, key, queue, payload, encrypted, headers, context, status,
                             attempts, available_at, last_error, created_at, published_at)
        SELECT u, kind, name, CASE WHEN %s THEN key END, queue, payload, encrypted,
               jsonb_set(headers, '{{message_id}}', to_jsonb(u::text)), '{{}}', 'pending', 0, now(), '', now(), NULL
        FROM (SELECT gen_random_uuid() AS u, * FROM {TEMPLATE}) AS t ORDER BY seq
        """,
        [keyed],
    )
    admin.execute(f"VACUUM ANALYZE {TABLE}")


def insert_retained(admin: psycopg.Connection, *, count: int, keys: int) -> float:
    """Insert ``count`` published events spread over the last seven days (same tenants); returns seconds."""
    started = time.perf_counter()
    admin.execute(
        f"""
        INSERT INTO {TABLE} (message_id, kind, name, key, queue, payload, encrypted, headers, context, status,
                             attempts, available_at, last_error, created_at, published_at)
        SELECT u, 'event', (ARRAY['order.placed', 'order.paid', 'order.shipped', '{TOPIC}'])[1 + g %% 4],
               'tenant-' || lpad((g %% %s)::text, 2, '0'), '',
               format('{{"order_id":%%s,"customer_id":%%s,"amount_cents":%%s,"currency":"EUR","sku":"SKU-%%s",'
                      '"quantity":%%s}}', g, 5000 + g %% 997, 1999 + g %% 500, lpad((g %% 313)::text, 4, '0'),
                      1 + g %% 3),
               false, jsonb_build_object('message_id', u::text), '{{}}', 'published', 1, ts, '', ts,
               ts + interval '15 milliseconds'
        FROM (SELECT g, gen_random_uuid() AS u,
                     now() - interval '7 days' + g * (interval '7 days' / %s) AS ts
              FROM generate_series(1, %s) AS g) AS s
        """,
        [keys, count, count],
    )
    admin.execute(f"ANALYZE {TABLE}")
    return time.perf_counter() - started


def pending(admin: psycopg.Connection) -> int:
    return admin.execute(f"SELECT count(*) FROM {TABLE} WHERE status = 'pending'").fetchone()[0]


def raw_drain(dsn: str, redis_url: str, *, target_list: str, batch_size: int) -> tuple[int, float]:
    """The baseline: plain psycopg + redis-py batches (claim, one variadic LPUSH, mark, commit).

    Like for like with the relay, which sends one multi-value LPUSH per queue and batch: here every
    message goes to one list, so one LPUSH per batch.

    Returns (messages moved, seconds).
    """
    client = redis.Redis.from_url(redis_url)
    moved = 0
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        while True:
            with conn.transaction():
                rows = conn.execute(
                    f"SELECT id, payload FROM {TABLE} WHERE status = 'pending' ORDER BY id LIMIT %s "
                    "FOR UPDATE SKIP LOCKED",
                    [batch_size],
                ).fetchall()
                if not rows:
                    break
                pipe = client.pipeline(transaction=False)
                pipe.lpush(target_list, *(body for _, body in rows))
                pipe.execute()
                conn.execute(f"UPDATE {TABLE} SET status = 'published' WHERE id = ANY(%s)",
                             [[row_id for row_id, _ in rows]])
            moved += len(rows)
        seconds = time.perf_counter() - started
    client.close()
    log(f"raw loop moved {moved} in {seconds:.2f}s")
    return moved, seconds
