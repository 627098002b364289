"""kill -9 of each process kind of a running stack, at a moment when it matters, then what its supervisor does.

Each fault returns a line saying what it hit. Where timing decides whether a kill hurts (a request or a delivery
in the middle of its transaction), a table trap holds writers in flight until the victim is chosen among them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from apps.orders.models import Order, Reservation
from tests.helpers import wait_until
from tests.reliability.load import OrderLoad
from tests.reliability.stack import Service, Stack
from tests.reliability.support import TableTrap, relay_pid


@contextmanager
def caught_writing(stack: Stack, table: str, owner: Service) -> Iterator[list[int]]:
    """Hold writers of ``table`` until the block ends; yield the caught pids that are children of ``owner``."""
    trap = TableTrap(stack.database.connect(), table)
    try:
        yield wait_until(lambda: [pid for pid in trap.caught_pids() if pid in owner.children()], timeout=60,
                         interval=0.05, message=f"a {owner.name} child in the middle of writing {table}")
    finally:
        trap.release()


def kill_gunicorn_worker(stack: Stack, load: OrderLoad) -> str:
    """A web worker dies with requests inside their transaction (after the Idempotency-Key claim committed)."""
    with caught_writing(stack, Order._meta.db_table, stack.web) as caught:
        os.kill(caught[0], signal.SIGKILL)
    # The master notices and boots a replacement; the clients' retries meet the dead request's claim.
    wait_until(lambda: len(stack.web.children()) == 2 and caught[0] not in stack.web.children(), timeout=60,
               message="gunicorn to replace its worker")
    return f"gunicorn worker {caught[0]} killed mid-request"


def kill_web_master(stack: Stack, load: OrderLoad) -> str:
    """The gunicorn master dies; its workers finish what they hold and exit; the supervisor starts gunicorn again
    once clients have met the outage."""
    victim = stack.web.pid
    failed_before = load.failed_attempts()
    stack.web.kill()
    wait_until(lambda: load.failed_attempts() > failed_before, timeout=60,
               message="clients to meet the dead web")
    stack.web.restart_after_death()
    return f"gunicorn master {victim} killed, web restarted"


def kill_relay_child(stack: Stack, load: OrderLoad) -> str:
    """The pool child serving the relay dies mid-lease; beat's next tick starts another relay."""
    with stack.database.connect(autocommit=True) as conn:
        victim = wait_until(lambda: (pid := relay_pid(conn=conn)) in stack.worker.children() and pid, timeout=60,
                            message="a relay serving its lease in the worker's pool")
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: relay_pid(conn=conn) not in (None, victim), timeout=60,
                   message="a new relay after the kill")
    return f"relay pool child {victim} killed"


def kill_saga_step_child(stack: Stack, load: OrderLoad) -> str:
    """A pool child dies inside a checkout step's transaction (reservation written, step result not committed)."""
    with caught_writing(stack, Reservation._meta.db_table, stack.worker) as caught:
        os.kill(caught[0], signal.SIGKILL)
    return f"saga step pool child {caught[0]} killed mid-step"


def kill_worker_group(stack: Stack, load: OrderLoad) -> str:
    """The whole worker (main process and pool) dies with deliveries in flight, as a lost node; it is restarted."""
    victim = stack.worker.pid
    with caught_writing(stack, Reservation._meta.db_table, stack.worker) as caught:
        stack.worker.kill_group()
    stack.worker.start()
    return f"worker group {victim} killed with {len(caught)} deliveries in flight, worker restarted"


def kill_beat(stack: Stack, load: OrderLoad) -> str:
    """beat dies; running relays hand over to their successors on their own; beat is started again."""
    victim = stack.beat.pid
    stack.beat.kill()
    stack.beat.start()
    return f"beat {victim} killed and restarted"


KILLS: dict[str, Callable[[Stack, OrderLoad], str]] = {
    "gunicorn-worker": kill_gunicorn_worker,
    "web-master": kill_web_master,
    "relay-child": kill_relay_child,
    "saga-step-child": kill_saga_step_child,
    "worker-group": kill_worker_group,
    "beat": kill_beat,
}
