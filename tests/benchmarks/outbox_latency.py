"""Commit-to-broker latency: write events at a steady rate, time each from commit to its arrival in Redis.

Writers and the consumer are child processes of the benchmark. One Python process cannot sustain
1,000 single-event transactions a second here (publish() plus commit costs about 1.5 ms), and
threads would delay the timestamps behind the GIL. Every process stamps with CLOCK_MONOTONIC
(``time.monotonic_ns``), which is one clock for the whole machine.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import time

from tests.benchmarks.harness import log, percentile
from tests.benchmarks.outbox_backlog import TOPIC, key_for, payload_for


def _consume(redis_url: str, queue: str, stop, results) -> None:
    """Pop every record of ``queue`` (a kombu Redis list) and send back (envelope id, arrival ns) pairs."""
    import redis

    client = redis.Redis.from_url(redis_url)
    arrivals: list[tuple[bytes, int]] = []
    results.put("ready")
    while True:
        popped = client.brpop([queue], timeout=0.2)
        if popped is None:
            if stop.is_set():
                break
            continue
        arrivals.append((popped[1], time.monotonic_ns()))
        # Whatever else is already queued arrived before this second read returns.
        more = client.rpop(queue, 500) or []
        now = time.monotonic_ns()
        arrivals.extend((raw, now) for raw in more)
    stamped = []
    for raw, arrived in arrivals:
        record = json.loads(raw)
        envelope = json.loads(base64.b64decode(record["body"]))
        stamped.append((envelope["id"], arrived))
    results.put(stamped)


def _writer(kind: str):
    """A function that writes one event in its own transaction and returns its message id once committed.

    "publish" goes through apps.outbox.publish(). "sql" sends the same statements publish() sends
    (per-key advisory lock, INSERT, pg_notify, COMMIT) from plain psycopg: the database and the relay
    see the same traffic, but the load generator needs a fifth of the CPU, which on a 2-core machine
    is what lets it reach 1,000 transactions a second next to the relay.
    """
    import django

    django.setup()
    from django.db import connection, transaction

    from apps.outbox import publish
    from apps.outbox.models import OutboxMessage
    from apps.outbox.writing import NOTIFY_CHANNEL

    if kind == "publish":
        connection.ensure_connection()

        def write(index: int, keys: int) -> str:
            with transaction.atomic():
                message = publish(TOPIC, payload_for(index), key=key_for(index, keys))
            return str(message.message_id)

        return write

    import uuid

    import psycopg

    conn = psycopg.connect(os.environ["TEST_DATABASE_URL"].replace("postgres://", "postgresql://", 1))
    insert = (
        f"INSERT INTO {OutboxMessage._meta.db_table} (message_id, kind, name, key, queue, payload, encrypted, "
        "headers, context, status, attempts, available_at, last_error, created_at) "
        "VALUES (%s, 'event', %s, %s, '', %s, false, %s, '{}', 'pending', 0, now(), '', now()) RETURNING id"
    )

    def write(index: int, keys: int) -> str:
        message_id, key = str(uuid.uuid4()), key_for(index, keys)
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", [key])
        conn.execute(insert, [message_id, TOPIC, key, json.dumps(payload_for(index), separators=(",", ":")),
                              json.dumps({"message_id": message_id})]).fetchone()
        conn.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
        conn.commit()
        return message_id

    return write


def _publish(share: int, shares: int, writer: str, schedule, go, total: int, measured_from: int, keys: int,
             results) -> None:
    """Write events share, share + shares, ... each in its own transaction at its scheduled time."""
    write = _writer(writer)
    results.put("ready")
    go.wait()
    start, rate = schedule
    committed: dict[str, int] = {}
    late = 0
    for index in range(share, total, shares):
        wait = start + index / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.005:
            late += 1
        message_id = write(index, keys)
        if index >= measured_from:
            committed[message_id] = time.monotonic_ns()
    results.put((committed, late, time.monotonic()))


def measure_latency(*, redis_url: str, queue: str, rate: float, seconds: float, warmup: float, keys: int,
                    publishers: int, writer: str, drained) -> dict:
    """Write at ``rate``/s for warmup + seconds from ``publishers`` processes; latency of the measured part.

    ``drained()`` tells when the relay has published everything, so the consumer can stop.
    """
    context = multiprocessing.get_context("spawn")
    stop, go = context.Event(), context.Event()
    consumed, published = context.Queue(), context.Queue()
    total, measured_from = int(rate * (warmup + seconds)), int(rate * warmup)
    consumer = context.Process(target=_consume, args=(redis_url, queue, stop, consumed), daemon=True)
    consumer.start()
    schedule = context.Array("d", 2)
    senders = [context.Process(target=_publish, daemon=True,
                               args=(share, publishers, writer, schedule, go, total, measured_from, keys, published))
               for share in range(publishers)]
    for sender in senders:
        sender.start()
    try:
        if consumed.get(timeout=60) != "ready" or any(published.get(timeout=60) != "ready" for _ in senders):
            raise RuntimeError("latency consumer or publishers failed to start")
        schedule[0], schedule[1] = time.monotonic() + 0.1, rate
        go.set()
        committed: dict[str, int] = {}
        late, finished = 0, 0.0
        for _ in senders:
            share_committed, share_late, share_finished = published.get(timeout=warmup + seconds + 120)
            committed.update(share_committed)
            late += share_late
            finished = max(finished, share_finished)
        elapsed = finished - schedule[0]
        log(f"{writer}: wrote {total} events in {elapsed:.2f}s ({total / elapsed:.0f}/s) from {publishers} processes, "
            f"{late} more than 5 ms behind schedule")
        deadline = time.monotonic() + 60
        while not drained() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        stamped = consumed.get(timeout=60)
    finally:
        for process in (consumer, *senders):
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    latencies = sorted((arrived - committed[event_id]) / 1e6 for event_id, arrived in stamped
                       if event_id in committed)
    missing = len(committed) - len(latencies)
    if missing:
        log(f"WARNING: {missing} measured events never arrived on {queue}")
    return {
        "p50": round(percentile(latencies, 0.50), 2),
        "p95": round(percentile(latencies, 0.95), 2),
        "p99": round(percentile(latencies, 0.99), 2),
        "max": round(latencies[-1], 2) if latencies else None,
        "events": len(latencies),
        "missing": missing,
        "rate_eps": round(total / elapsed),
        "late_publishes": late,
    }
