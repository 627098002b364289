"""An external consumer's view: a durable queue bound to the events exchange, read once the system has settled,
and what must hold for it (every committed event arrives, nothing rolled back does, each key in order)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from django.conf import settings
from kombu import Connection, Exchange, Queue, binding

from tests.reliability.invariants import ORDER_PLACED, Violations
from tests.reliability.keyed_writer import TOPIC

QUEUE = "faults-observer"


class EventObserver:
    """Binds ``order.#`` and the keyed writer's topic before anything is relayed (events nobody is bound to are
    dropped, on RabbitMQ and Redis alike), and drains the queue in arrival order."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic", durable=True)
        self.queue = Queue(QUEUE, bindings=[binding(exchange, routing_key="order.#"),
                                            binding(exchange, routing_key=TOPIC)],
                           durable=True)

    def declare(self) -> None:
        with Connection(self.broker_url, connect_timeout=5) as conn:
            self.queue(conn.channel()).declare()

    def drain(self) -> list[dict]:
        envelopes = []
        with Connection(self.broker_url, connect_timeout=5) as conn:
            bound = self.queue(conn.channel())
            while (message := bound.get(no_ack=True)) is not None:
                envelopes.append(message.payload)
        return envelopes


def read_writer_log(path: Path) -> dict[str, set[str]]:
    """The keyed writer's message ids by transaction outcome (committed, rolled_back, unknown)."""
    outcomes: dict[str, set[str]] = defaultdict(set)
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            outcomes[entry["outcome"]].update(entry["ids"])
    return outcomes


def check_events(envelopes: list[dict], *, prefix: str, written: dict[str, set[str]],
                 order_event_ids: set[str]) -> Violations:
    """Every committed event reached the exchange, no rolled-back one did, and each key arrived in order."""
    found = Violations()
    keyed = [e for e in envelopes if e.get("topic") == TOPIC and str(e.get("key", "")).startswith(f"{prefix}-")]
    received = {e["id"] for e in keyed}
    for missing in sorted(written["committed"] - received):
        found.add("a committed keyed event never reached the exchange", missing)
    for leaked in sorted(received & written["rolled_back"]):
        found.add("a rolled-back event reached the exchange", leaked)
    for stray in sorted(received - written["committed"] - written["unknown"] - written["rolled_back"]):
        found.add("an event nobody wrote reached the exchange", stray)
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for envelope in keyed:  # duplicates are allowed (at-least-once); order is judged on first arrivals
        if envelope["id"] not in seen:
            seen.add(envelope["id"])
            first_seen[envelope["key"]].append(envelope["payload"]["seq"])
    for key, seqs in first_seen.items():
        if seqs != sorted(seqs):
            found.add("per-key order broken", f"{key}: {seqs[:40]}")
    placed = {e["id"] for e in envelopes if e.get("topic") == ORDER_PLACED}
    for missing in sorted(order_event_ids - placed):
        found.add("an order.placed event never reached the exchange", missing)
    return found
