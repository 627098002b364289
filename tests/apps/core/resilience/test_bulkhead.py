"""Bulkheads: a local bound per process, a distributed bound across processes whose leases expire."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from apps.core.resilience import BulkheadFull, DistributedBulkhead, LocalBulkhead, SharedRedis
from tests.apps.core.resilience.forked import fork_context
from tests.helpers import wait_until


def _occupy(bulkhead, count: int):
    """Hold ``count`` slots in threads until the returned event is set."""
    release, entered = threading.Event(), threading.Semaphore(0)

    def hold():
        with bulkhead.slot():
            entered.release()
            release.wait(10)

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        assert entered.acquire(timeout=5)
    return release, threads


@pytest.mark.parametrize("kind", ["local", "distributed"])
def test_calls_beyond_the_limit_are_refused_until_a_slot_frees(kind, shared, name):
    bulkhead = LocalBulkhead(name, 2) if kind == "local" else DistributedBulkhead(name, 2, redis=shared)
    release, threads = _occupy(bulkhead, 2)

    with pytest.raises(BulkheadFull):
        with bulkhead.slot():
            pass

    release.set()
    for thread in threads:
        thread.join(5)
    with bulkhead.slot():
        pass


def test_waiting_callers_get_a_slot_within_max_wait(shared, name):
    bulkhead = DistributedBulkhead(name, 1, max_wait=5, redis=shared)
    release, _ = _occupy(bulkhead, 1)
    threading.Timer(0.1, release.set).start()

    with bulkhead.slot():
        pass


def test_decorator(name):
    bulkhead = LocalBulkhead(name, 1)

    @bulkhead
    def work():
        with pytest.raises(BulkheadFull):
            work_inner()
        return "done"

    @bulkhead
    def work_inner():
        return "unreachable"

    assert work() == "done"


def _hold_slots(url: str, name: str, ready) -> None:
    bulkhead = DistributedBulkhead(name, 2, lease=1.0, redis=SharedRedis(url))
    with bulkhead.slot(), bulkhead.slot():
        ready.set()
        threading.Event().wait()


def test_slots_of_a_killed_holder_come_back_when_their_leases_expire(redis_url, shared, name):
    ready = fork_context.Event()
    child = fork_context.Process(target=_hold_slots, args=(redis_url, name, ready))
    child.start()
    try:
        assert ready.wait(20)
        bulkhead = DistributedBulkhead(name, 2, max_wait=1.2, redis=shared)
        with pytest.raises(BulkheadFull):
            with bulkhead.slot():  # the child keeps renewing past its 1s lease
                pass

        os.kill(child.pid, signal.SIGKILL)
        child.join(10)

        bulkhead = DistributedBulkhead(name, 2, max_wait=3, redis=shared)
        with bulkhead.slot(), bulkhead.slot():
            pass
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)


def test_redis_unreachable_falls_back_to_a_local_bound(unreachable, name):
    bulkhead = DistributedBulkhead(name, 1, redis=unreachable)

    with bulkhead.slot():
        with pytest.raises(BulkheadFull):
            with bulkhead.slot():
                pass
    wait_until(lambda: _enter(bulkhead), timeout=2, message="the slot to free")


def _enter(bulkhead) -> bool:
    with bulkhead.slot():
        return True
