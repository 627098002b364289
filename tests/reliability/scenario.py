"""One fault-injection scenario: orders flow over HTTP, faults strike while they do, the system settles, and every
invariant is checked, with a report that says which one broke, for which orders, after which fault."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from apps.outbox.models import OutboxMessage
from tests.helpers import wait_until
from tests.payment_stub import PaymentStub
from tests.reliability.checkouts import DECLINED_EVERY, FAILING_EVERY, check_checkouts
from tests.reliability.invariants import (
    ORDER_PLACED,
    check_orders,
    check_replays,
    load_summary,
    seed_products,
    settle,
)
from tests.reliability.load import OrderLoad
from tests.reliability.observer import check_events, read_writer_log
from tests.reliability.stack import Stack, StackDatabase
from tests.reliability.support import private_redis

# A fault strikes while the clients place orders (it may watch them, e.g. to outlast a few of their retries).
Fault = Callable[[OrderLoad], str]


@contextmanager
def running_stack(directory: Path, template: StackDatabase, name: str, *, payments: PaymentStub,
                  broker_url: str | None = None, **env: str) -> Iterator[Stack]:
    """A stack on a fresh copy of the template database, with a private Redis (the broker unless one is given)."""
    with private_redis(directory) as redis_server:
        database = template.clone(name)
        stack = Stack(directory, database=database, broker_url=broker_url or redis_server.url,
                      redis_url=f"redis://127.0.0.1:{redis_server.port}/1", payments=payments, **env)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


def run_orders_under_faults(stack: Stack, *, prefix: str, faults: list[Fault], orders_between: int = 40,
                            rate: float = 30.0) -> OrderLoad:
    """Place orders while ``faults`` strike one after another, with ``orders_between`` orders answered before each
    fault and after the last one, the provider declining some and failing others once (checkouts.py); assert
    every invariant once the system has settled and print a one-line summary. Returns the clients' record."""
    with stack.database.connect() as conn:
        seed_products(conn, prefix)
    stack.payments.misbehave(declined_every=DECLINED_EVERY, failing_every=FAILING_EVERY)
    try:
        return _run(stack, prefix=prefix, faults=faults, orders_between=orders_between, rate=rate)
    finally:
        stack.payments.misbehave()


def _run(stack: Stack, *, prefix: str, faults: list[Fault], orders_between: int, rate: float) -> OrderLoad:
    started = time.monotonic()
    writer, written = stack.keyed_writer(prefix)
    writer.start()
    load = OrderLoad(stack.base_url, stack.database.api_key, prefix=prefix, rate=rate)
    load.start()
    hits = []
    for fault in [*faults, None]:
        target = load.finished() + orders_between
        wait_until(lambda t=target: load.finished() >= t, timeout=orders_between / rate + 240, interval=0.05,
                   message=f"{orders_between} more orders answered (after: {hits or 'none yet'})")
        if fault is not None:
            hits.append(f"{fault(load)} after {load.finished()} orders")
    load.stop(timeout=300)
    writer.stop()
    flowed = time.monotonic() - started
    outcome = settle(stack.database.connect, prefix)
    settled = time.monotonic() - started
    with stack.database.connect() as conn:
        violations = check_orders(conn, load)
        violations.merge(check_checkouts(conn, prefix, stack.payments))
        order_events = {message_id for (message_id,) in conn.execute(
            f"SELECT message_id::text FROM {OutboxMessage._meta.db_table} WHERE kind = 'event' AND name = %s "
            "AND payload LIKE %s", [ORDER_PLACED, f"%{prefix}-%"])}
    events = check_events(stack.observer.drain(), prefix=prefix, written=read_writer_log(written),
                          order_event_ids=order_events)
    violations.merge(events)
    if outcome == "settled":
        violations.merge(check_replays(load))
    summary = (f"{'; '.join(hits)}. Clients: {load_summary(load)}. Orders flowed for {flowed:.0f}s, "
               f"{outcome} after {settled:.0f}s.")
    assert not violations, (f"Invariants broken ({summary})\n{violations.report()}\n"
                            f"Process logs: {stack.directory}")
    print(summary)
    return load
