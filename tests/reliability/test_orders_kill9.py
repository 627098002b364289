"""issue 15 §3: kill -9 of each process kind in turn while orders flow through the HTTP API.

A gunicorn worker (mid-request), the gunicorn master, the Celery pool child serving the relay, a pool child in
the middle of a subscriber's transaction, the whole worker group (deliveries in flight), and beat. After each, the
stack recovers as its supervisor would restart it, and once it settles: every order answered 2xx exists once for
its Idempotency-Key and is reserved exactly once by its own event; nothing committed is missing, nothing is
dead-lettered, no event was charged an attempt, and retrying a key replays it.
"""

from __future__ import annotations

import pytest

from tests.reliability.faults import KILLS
from tests.reliability.scenario import run_orders_under_faults, running_stack

ROUNDS = 3  # the soak kills every kind this many times, in turn
# Kills the clients must see (and retry through); the others happen behind the broker.
SEEN_BY_CLIENTS = {"gunicorn-worker", "web-master"}


@pytest.fixture(scope="module")
def stack(stack_template, tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("kill9"), stack_template, "kill9") as stack:
        yield stack


@pytest.mark.parametrize("kind", list(KILLS))
def test_orders_survive_kill9_of(stack, kind):
    stack.heal()
    load = run_orders_under_faults(stack, prefix=f"K9{kind.replace('-', '')}",
                                   faults=[lambda load: KILLS[kind](stack, load)])
    if kind in SEEN_BY_CLIENTS:
        assert any(len(placement.attempts) > 1 for placement in load.placements), "the kill hit a request"


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_orders_survive_rounds_of_kill9_of_every_process_kind(stack):
    stack.heal()
    faults = [lambda load, kill=kill: kill(stack, load) for _ in range(ROUNDS) for kill in KILLS.values()]
    run_orders_under_faults(stack, prefix="K9soak", faults=faults, orders_between=150, rate=40)
