"""kill -9 the relay again and again while events are written: nothing committed is lost, per-key order holds,
and duplicates stay within one batch per kill."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter, defaultdict

import pytest
from django.conf import settings
from django.db import connection, transaction
from kombu import Connection, Exchange, Queue

from apps.outbox import publish
from apps.outbox.models import OutboxMessage
from tests.helpers import wait_until
from tests.reliability.support import (
    RELAY_ENV,
    ListConsumer,
    RestartableWorker,
    beat,
    decode_record,
    parent_pid,
    private_redis,
    relay_pid,
)

pytestmark = pytest.mark.django_db(transaction=True)

TOPIC = "reliability.tick"
EVENTS = 10_000  # at WRITE_RATE: the four kills land while writers still write
KEYS = [f"key-{n:02d}" for n in range(50)]
BATCH_SIZE = 500
WRITERS = 2
EVENTS_PER_TRANSACTION = 100
WRITE_RATE = 1000  # events/s over all writers: spreads the writes over the kills
ROLLBACK_EVERY = 10  # every tenth transaction rolls back; none of its events may reach the broker
KILLS = ("pool-child", "worker-group", "pool-child", "worker-group")


class _RolledBack(Exception):
    pass


class EventWriter(threading.Thread):
    """Publishes events for its own keys, each payload carrying the key's sequence number in commit order."""

    def __init__(self, keys: list[str], total: int) -> None:
        super().__init__(daemon=True)
        self.keys, self.total = keys, total
        self.committed: list[str] = []
        self.rolled_back: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        sequence = dict.fromkeys(self.keys, 0)
        started = time.monotonic()
        transactions = 0
        try:
            while len(self.committed) < self.total:
                transactions += 1
                count = min(EVENTS_PER_TRANSACTION, self.total - len(self.committed))
                next_sequence = dict(sequence)
                ids = []
                try:
                    with transaction.atomic():
                        for index in range(count):
                            key = self.keys[(len(self.committed) + index) % len(self.keys)]
                            message = publish(TOPIC, {"key": key, "seq": next_sequence[key]}, key=key)
                            next_sequence[key] += 1
                            ids.append(str(message.message_id))
                        if transactions % ROLLBACK_EVERY == 0:
                            raise _RolledBack
                except _RolledBack:
                    self.rolled_back.extend(ids)
                    continue
                sequence = next_sequence
                self.committed.extend(ids)
                # Load shaping, not waiting for a condition: keep to the target rate.
                ahead = len(self.committed) * WRITERS / WRITE_RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            connection.close()


def _pending() -> int:
    return OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).count()


@pytest.mark.parametrize("relays", [1, 2], ids=["one-relay", "two-relays"])
def test_relay_killed_repeatedly_loses_nothing_and_keeps_key_order(tmp_path, relays):
    # With two slots, two relays claim batches concurrently (SKIP LOCKED) and must still keep each key in order.
    env = {**RELAY_ENV, "OUTBOX_BATCH_SIZE": str(BATCH_SIZE), "OUTBOX_RELAYS": str(relays)}
    with private_redis(tmp_path) as broker:
        # Bound before anything is relayed: the relay routes by the bindings it finds.
        with Connection(broker.url) as conn:
            exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic")
            Queue("reliability-observer", exchange, routing_key="reliability.#")(conn.channel()).declare()
        consumer = ListConsumer(broker.url, "reliability-observer")
        consumer.start()
        worker = RestartableWorker(tmp_path, "-Q", "outbox", "--concurrency", str(relays), broker_url=broker.url,
                                   **env)
        writers = [EventWriter(KEYS[n::WRITERS], EVENTS // WRITERS) for n in range(WRITERS)]
        kills: list[str] = []
        try:
            worker.start()
            with beat(tmp_path, broker_url=broker.url, **env):
                started = time.monotonic()
                for writer in writers:
                    writer.start()
                for kind in KILLS:
                    # Kill a relay that is working: it holds the slot and has published since it started.
                    published_before = len(consumer.records)
                    wait_until(lambda before=published_before: len(consumer.records) >= before + BATCH_SIZE
                               or (all(not w.is_alive() for w in writers) and _pending() == 0),
                               timeout=60, message="the relay to make progress")
                    if relays > 1:
                        wait_until(lambda: all(relay_pid(slot) for slot in range(relays)), timeout=30,
                                   message="every relay slot to be served")
                    victim = wait_until(relay_pid, timeout=30, message="a relay holding the slot")
                    assert parent_pid(victim) == worker.process.pid, "the relay runs in the worker's pool"
                    if kind == "pool-child":
                        os.kill(victim, signal.SIGKILL)
                    else:
                        worker.kill_group()
                        worker.start()
                    kills.append(f"{kind}@{sum(len(w.committed) for w in writers)}")
                    wait_until(lambda v=victim: relay_pid() not in (None, v), timeout=30,
                               message=f"a new relay after killing the {kind}")
                for writer in writers:
                    writer.join(timeout=120)
                    assert not writer.is_alive() and writer.error is None, writer.error
                written_after = time.monotonic() - started
                committed = {mid for writer in writers for mid in writer.committed}
                wait_until(lambda: _pending() == 0, timeout=120, message="the backlog to drain")
                drained_after = time.monotonic() - started
                wait_until(lambda: len({decode_record(r)["id"] for r in list(consumer.records)}) >= len(committed),
                           timeout=30, message="the observer to receive every event")
        finally:
            worker.stop()
            consumer.stop()
            for writer in writers:
                writer.join(timeout=30)

    assert consumer.error is None, consumer.error
    envelopes = [decode_record(record) for record in consumer.records]
    received_ids = [envelope["id"] for envelope in envelopes]
    rolled_back = {mid for writer in writers for mid in writer.rolled_back}
    assert len(committed) == EVENTS and rolled_back
    assert set(received_ids) == committed, "every committed event reached the broker, nothing else did"

    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for envelope in envelopes:
        if envelope["id"] not in seen:
            seen.add(envelope["id"])
            first_seen[envelope["key"]].append(envelope["payload"]["seq"])
    out_of_order = {key: seqs for key, seqs in first_seen.items() if seqs != list(range(len(seqs)))}
    assert not out_of_order, f"per-key order broken for {sorted(out_of_order)}"
    assert set(first_seen) == set(KEYS)

    duplicates = len(received_ids) - len(set(received_ids))
    # Each kill is labelled with how many events were committed when it happened.
    print(f"relays={relays} kills={kills} received={len(received_ids)} duplicates={duplicates} "
          f"max_copies={max(Counter(received_ids).values())} written_after={written_after:.1f}s "
          f"drained_after={drained_after:.1f}s")
    assert len(kills) >= 3
    # A kill loses at most the uncommitted batch of each relay it kills.
    assert duplicates <= len(kills) * relays * BATCH_SIZE
    assert not OutboxMessage.objects.filter(status=OutboxMessage.Status.DEAD).exists()
