"""issue 15 §3: PostgreSQL stops and starts again while orders flow (a private cluster: never the shared one).

The stop strikes while a checkout step is inside its transaction, and lasts until the clients have met it; orders,
keyed events and deliveries keep coming, queued in the broker, while the database is down. Once the system
settles: every order answered 2xx exists once for its key and is checked out exactly once (tests/reliability/
invariants.py: its saga completed, reserved by its own event, charged once, confirmed),
nothing committed is missing or dead-lettered, and each key's events reached the exchange in order.
"""

from __future__ import annotations

import pytest

from apps.orders.models import Reservation
from tests.helpers import wait_until
from tests.reliability.faults import caught_writing
from tests.reliability.load import OrderLoad
from tests.reliability.scenario import run_orders_under_faults, running_stack
from tests.reliability.stack import Stack

FAILED_ATTEMPTS_WHILE_DOWN = 10


@pytest.fixture(scope="module")
def stack(stack_template, payment_stub, tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("pgrestart"), stack_template, "pgrestart",
                       payments=payment_stub) as stack:
        yield stack


def restart_database(stack: Stack, load: OrderLoad, *, mode: str) -> str:
    """Stop the cluster (``fast``: a clean stop; ``immediate``: a crash) with a delivery in flight, keep it down
    until the clients have failed a few times, then start it."""
    server = stack.database.server
    with caught_writing(stack, Reservation._meta.db_table, stack.worker):
        failed_before = load.failed_attempts()
        server.stop(mode)  # the trap's own connection goes with it
    wait_until(lambda: load.failed_attempts() >= failed_before + FAILED_ATTEMPTS_WHILE_DOWN,
               timeout=60, interval=0.05, message="the clients to meet the outage")
    server.start()
    return f"PostgreSQL stopped ({mode}) mid-delivery, started again"


def test_orders_survive_a_database_restart(stack):
    stack.heal()
    run_orders_under_faults(stack, prefix="PGrestart",
                            faults=[lambda load: restart_database(stack, load, mode="fast")])


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_orders_survive_repeated_database_restarts_and_crashes(stack):
    stack.heal()
    faults = [lambda load, mode=mode: restart_database(stack, load, mode=mode)
              for mode in ("fast", "immediate", "fast", "immediate", "fast")]
    run_orders_under_faults(stack, prefix="PGsoak", faults=faults, orders_between=300)
