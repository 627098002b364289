"""issue 15 §3: kill -9 of each process kind in turn while orders flow through the HTTP API.

A gunicorn worker (mid-request), the gunicorn master, the Celery pool child serving the relay, a pool child in
the middle of a checkout step's transaction, the whole worker group (deliveries in flight), and beat. After each,
the stack recovers as its supervisor would restart it, and once it settles: every order answered 2xx exists once
for its Idempotency-Key and is checked out exactly once (saga completed, reserved by its own event, charged once,
confirmed); nothing committed is missing, nothing is dead-lettered, no event was charged an attempt, and retrying
a key replays it.
"""

from __future__ import annotations

import pytest

from tests.reliability.faults import KILLS
from tests.reliability.scenario import run_orders_under_faults, running_stack

ROUNDS = 3  # the soak kills every kind this many times, in turn


@pytest.fixture(scope="module")
def stack(stack_template, payment_stub, tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("kill9"), stack_template, "kill9", payments=payment_stub) as stack:
        yield stack


def test_orders_survive_kill9_of_each_process_kind_in_turn(stack):
    # One settle for all six kills keeps `make test` short; a failure's report lists every fault with the
    # number of orders answered before it, and the soak below repeats the round.
    stack.heal()
    load = run_orders_under_faults(stack, prefix="K9", rate=15, faults=[lambda load, kill=kill: kill(stack, load)
                                                                        for kill in KILLS.values()])
    # The web kills (gunicorn worker mid-request, master) are what clients see and retry through.
    assert any(len(placement.attempts) > 1 for placement in load.placements), "no kill hit a request"


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_orders_survive_rounds_of_kill9_of_every_process_kind(stack):
    stack.heal()
    faults = [lambda load, kill=kill: kill(stack, load) for _ in range(ROUNDS) for kill in KILLS.values()]
    run_orders_under_faults(stack, prefix="K9soak", faults=faults, orders_between=150, rate=40)
