"""What must hold once the system settles after faults, read with plain SQL from the stack's own database.

Every order whose POST was answered 2xx exists exactly once for its Idempotency-Key, its order.placed event
reached the subscriber that starts its checkout saga exactly once (one inbox row), and it was reserved exactly
once, by that event. Every committed event was published on its first attempt; nothing was dead-lettered; a
retry of a key replays, it never places again. How each checkout ended (saga, stock, payment, the provider's
charges and refunds) is checked by checkouts.py.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable

import psycopg
import requests

from apps.orders.models import Order, Product, Reservation
from apps.orders.sagas import CHECKOUT
from apps.orders.subscribers import START_CHECKOUT
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.sagas.models import SagaInstance
from tests.reliability.load import OrderLoad

SUBSCRIBER = START_CHECKOUT
ORDER_PLACED = "order.placed"
SAGA_TERMINAL = [SagaInstance.State.COMPLETED, SagaInstance.State.COMPENSATED,
                 SagaInstance.State.COMPENSATION_FAILED, SagaInstance.State.CANCELLED]
PRODUCTS_PER_PREFIX = 10_000  # more than any scenario places; the load's SKUs are ``<prefix>-<5 digits>``
PRODUCT_STOCK = 1000
EXAMPLES = 5


def _rows(conn: psycopg.Connection, sql: str, params: list) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


def seed_products(conn: psycopg.Connection, prefix: str) -> None:
    """List every SKU the load of ``prefix`` can place (an unknown SKU is refused), with stock to spare and a
    price the providers accept (an amount ending in 13 cents is declined)."""
    conn.execute(f"""
        INSERT INTO {Product._meta.db_table} (sku, name, price_cents, stock, updated_at)
        SELECT %s || '-' || lpad(n::text, 5, '0'), 'fault injection', 100, %s, now()
        FROM generate_series(0, %s) AS n ON CONFLICT (sku) DO NOTHING""",
        [prefix, PRODUCT_STOCK, PRODUCTS_PER_PREFIX - 1])


def _progress(conn: psycopg.Connection, prefix: str) -> tuple[int, int, int]:
    """(orders, orders whose checkout ended, pending outbox rows and running sagas about them) for orders whose
    SKU starts with ``prefix``."""
    orders, ended = _rows(conn, f"""
        SELECT count(*), count(s.id) FROM {Order._meta.db_table} o
        LEFT JOIN {SagaInstance._meta.db_table} s ON s.name = %s AND s.key = o.id::text AND s.state = ANY(%s)
        WHERE o.sku LIKE %s""", [CHECKOUT, SAGA_TERMINAL, f"{prefix}-%"])[0]
    pending = _rows(conn, f"SELECT count(*) FROM {OutboxMessage._meta.db_table} "
                          "WHERE status = 'pending' AND payload LIKE %s", [f"%{prefix}-%"])[0][0]
    return orders, ended, pending


def settle(connect: Callable[[], psycopg.Connection], prefix: str, *, quiet: float = 30,
           timeout: float = 240) -> str:
    """Wait until every order of ``prefix`` ended its checkout and nothing about them is pending ("settled"), or until
    nothing has moved for ``quiet`` seconds ("stalled": work was lost or is stuck), or ``timeout``."""
    deadline = time.monotonic() + timeout
    last, changed = None, time.monotonic()
    while time.monotonic() < deadline:
        try:
            with connect() as conn:
                progress = _progress(conn, prefix)
        except psycopg.OperationalError:  # the database may still be coming back
            progress = None
        if progress is not None:
            orders, ended, pending = progress
            if orders and ended == orders and pending == 0:
                return "settled"
            if progress != last:
                last, changed = progress, time.monotonic()
            elif time.monotonic() - changed > quiet:
                return f"stalled at {orders} orders, {ended} checked out, {pending} pending"
        time.sleep(0.5)
    return f"timed out at {last}"


class Violations:
    """Invariant failures by kind, with a few examples each: enough to say what broke and where to look."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, example: str) -> None:
        self.by_kind[kind].append(example)

    def merge(self, other: Violations) -> None:
        for kind, examples in other.by_kind.items():
            self.by_kind[kind].extend(examples)

    def __bool__(self) -> bool:
        return bool(self.by_kind)

    def report(self) -> str:
        lines = []
        for kind, examples in self.by_kind.items():
            lines.append(f"- {kind}: {len(examples)}, e.g. " + "; ".join(examples[:EXAMPLES]))
        return "\n".join(lines)


def check_orders(conn: psycopg.Connection, load: OrderLoad) -> Violations:
    """Every invariant about the load's orders, events, inbox rows, reservations and dead letters (how each
    checkout ended is checkouts.py's)."""
    found = Violations()
    prefix = load.prefix
    orders: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for order_id, sku, status in _rows(conn, f"SELECT id, sku, status FROM {Order._meta.db_table} "
                                             "WHERE sku LIKE %s ORDER BY id", [f"{prefix}-%"]):
        orders[sku].append((order_id, status))

    for placement in load.placements:
        rows = orders.get(placement.sku, [])
        if len(rows) > 1:
            found.add("a key placed more than one order", f"{placement.key} → orders {[r[0] for r in rows]}")
        if placement.succeeded:
            if [r[0] for r in rows] != [placement.order_id]:
                found.add("a 2xx names an order the database does not hold once",
                          f"{placement.key} answered order {placement.order_id}, database has {rows}")
        elif placement.status is not None:
            found.add("a POST was refused", f"{placement.key}: {placement.status} {placement.error[:200]}")
        else:
            found.add("a client gave up (bounded retries ran out)", f"{placement.key}: {placement.error}")

    order_ids = [order_id for rows in orders.values() for order_id, _ in rows]
    keys = [f"order:{order_id}" for order_id in order_ids]
    events: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for key, message_id, status, attempts in _rows(conn, f"""
            SELECT key, message_id::text, status, attempts FROM {OutboxMessage._meta.db_table}
            WHERE kind = 'event' AND name = %s AND key = ANY(%s)""", [ORDER_PLACED, keys]):
        events[key].append((message_id, status, attempts))
    reservations: dict[int, list[str]] = defaultdict(list)
    for order_id, event_id in _rows(conn, f"SELECT order_id, event_id::text FROM {Reservation._meta.db_table} "
                                          "WHERE order_id = ANY(%s)", [order_ids]):
        reservations[order_id].append(event_id)
    message_ids = [message_id for rows in events.values() for message_id, _, _ in rows]
    inbox = Counter(dict(_rows(conn, f"SELECT message_id::text, count(*) FROM {InboxEntry._meta.db_table} "
                                     "WHERE consumer = %s AND message_id = ANY(%s::uuid[]) GROUP BY 1",
                               [SUBSCRIBER, message_ids])))

    for rows in orders.values():
        for order_id, _status in rows:
            event = events.get(f"order:{order_id}", [])
            if len(event) != 1:
                found.add("an order without exactly one order.placed event", f"order {order_id}: {event}")
                continue
            message_id, event_status, attempts = event[0]
            if event_status != OutboxMessage.Status.PUBLISHED:
                found.add("a committed event was never published", f"order {order_id}: {event_status}")
            elif attempts != 1:
                found.add("an event was charged attempts by a fault", f"order {order_id}: {attempts} attempts")
            if inbox[message_id] != 1:
                found.add("an event did not reach its subscriber exactly once (inbox)",
                          f"order {order_id} event {message_id}: {inbox[message_id]} inbox rows")
            if reservations.get(order_id) != [message_id]:
                found.add("an order not reserved exactly once by its own event",
                          f"order {order_id}: reservations {reservations.get(order_id, [])}")

    for row_id, kind, name, error in _rows(conn, f"""
            SELECT id, kind, name, last_error FROM {OutboxMessage._meta.db_table}
            WHERE status = 'dead' AND payload LIKE %s ORDER BY id""", [f"%{prefix}-%"]):
        found.add("a message was dead-lettered", f"#{row_id} {kind} {name}: {error[:200]}")
    return found


def check_replays(load: OrderLoad) -> Violations:
    """A client retrying a key that already succeeded gets the same order back, replayed; nothing new is placed."""
    found = Violations()
    with requests.Session() as session:
        session.headers.update({"Authorization": f"Bearer {load.api_key}", "Content-Type": "application/json"})
        for placement in load.placements:
            if not placement.succeeded:
                continue
            response = session.post(f"{load.base_url}/api/orders/", data=placement.body, timeout=20,
                                    headers={"Idempotency-Key": placement.key})
            if (response.status_code, response.headers.get("Idempotent-Replayed")) != (placement.status, "true") \
                    or response.json().get("id") != placement.order_id:
                found.add("a retry of a completed key did not replay it",
                          f"{placement.key}: {response.status_code} {response.text[:200]}")
    return found


def load_summary(load: OrderLoad) -> str:
    """How the clients fared: answers, attempts and what the retries met."""
    attempts = Counter(outcome for placement in load.placements for outcome in placement.attempts)
    retried = sum(1 for placement in load.placements if len(placement.attempts) > 1)
    return (f"{sum(p.succeeded for p in load.placements)}/{len(load.placements)} placed, {retried} needed retries, "
            f"{sum(p.replayed for p in load.placements)} answered by replay; attempts {dict(attempts)}")
