"""issue 15 §3: RabbitMQ stops and starts again while orders flow, with the workers and the relay on RabbitMQ
(a private node: never the shared one).

Requests never talk to the broker, so every POST succeeds on its first attempt during the outage; the events wait in
PostgreSQL and the relay retries. Once the node is back and the system settles: every order is checked out exactly
once (saga completed, reserved by its own event, charged once, confirmed), nothing is dead-lettered, no event was
charged an attempt by the outage (so the low OUTBOX_MAX_ATTEMPTS of these stacks would have shown it), and each key
reached the exchange in order.
"""

from __future__ import annotations

import pytest

from tests.helpers import wait_until
from tests.reliability.load import OrderLoad
from tests.reliability.private_services import PrivateRabbitMQ
from tests.reliability.scenario import run_orders_under_faults, running_stack
from tests.reliability.stack import Stack

ORDERS_DURING_OUTAGE = 40


def _relay_met_outage_since(stack: Stack, since) -> bool:
    """The relay recorded a failed cycle after ``since`` (its status row, what operators see in stats/admin)."""
    with stack.database.connect() as conn:
        row = conn.execute("SELECT max(last_error_at) FROM outbox_relaystatus").fetchone()
    return row[0] is not None and row[0] > since


def _events_waiting(stack: Stack) -> int:
    """order.placed events committed and not yet published (held back in PostgreSQL by the outage)."""
    with stack.database.connect() as conn:
        return conn.execute("SELECT count(*) FROM outbox_outboxmessage WHERE status = 'pending' "
                            "AND kind = 'event' AND name = 'order.placed'").fetchone()[0]


def _database_now(stack: Stack):
    with stack.database.connect() as conn:
        return conn.execute("SELECT statement_timestamp()").fetchone()[0]


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory):
    node = PrivateRabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    try:
        node.start()
        yield node
    finally:
        node.destroy()


@pytest.fixture(scope="module")
def stack(stack_template, rabbitmq, payment_stub, tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("rabbitmq-stack"), stack_template, "rabbitmq",
                       payments=payment_stub, broker_url=rabbitmq.url) as stack:
        yield stack


def stop_broker(stack: Stack, node: PrivateRabbitMQ, load: OrderLoad) -> str:
    """Stop the node; keep it down until orders have been placed and the outage held their events back; start it.

    A relay serving when the node stops fails through the outage (its status row says so); one whose serving
    window had just ended is not started again until the node is back (beat dispatches relays through the
    broker), and the events wait in PostgreSQL. Either way the outage was met."""
    stopped_at = _database_now(stack)
    placed_before = load.finished()
    node.stop()
    wait_until(lambda: load.finished() >= placed_before + ORDERS_DURING_OUTAGE
               and (_relay_met_outage_since(stack, stopped_at) or _events_waiting(stack) >= ORDERS_DURING_OUTAGE),
               timeout=120, interval=0.1, message="the outage to hold events back while orders are placed")
    placed_during = load.finished() - placed_before
    node.start()
    return f"RabbitMQ stopped for {placed_during} orders, started again"


def test_orders_survive_a_rabbitmq_outage(stack, rabbitmq):
    stack.heal()
    load = run_orders_under_faults(stack, prefix="RMQoutage", faults=[
        lambda load: stop_broker(stack, rabbitmq, load)])
    retried = [placement.key for placement in load.placements if len(placement.attempts) > 1]
    assert not retried, f"requests never wait for the broker, yet these needed retries: {retried}"


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_orders_survive_repeated_rabbitmq_outages(stack, rabbitmq):
    stack.heal()
    faults = [lambda load: stop_broker(stack, rabbitmq, load) for _ in range(4)]
    run_orders_under_faults(stack, prefix="RMQsoak", faults=faults, orders_between=300)
