"""Distributed lock: exclusivity under contention, fencing tokens, renewal, owner-only release, kill -9."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis

from apps.core.resilience import DistributedLock, LockLost, LockNotAcquired, SharedRedis
from tests.apps.core.resilience.forked import fork_context, run_forked
from tests.helpers import wait_until


def _contend(url: str, name: str, rounds: int) -> list[int]:
    shared = SharedRedis(url)
    raw = redis.Redis.from_url(url)
    tokens = []
    for _ in range(rounds):
        lock = DistributedLock(name, ttl=5, wait=20, redis=shared)
        with lock:
            inside = raw.incr(f"{name}:inside")
            # Read-modify-write that loses updates unless callers are really exclusive.
            counter = int(raw.get(f"{name}:counter") or 0)
            time.sleep(0.001)
            raw.set(f"{name}:counter", counter + 1)
            raw.rpush(f"{name}:tokens", lock.fencing_token)
            raw.rpush(f"{name}:overlap", inside)
            raw.decr(f"{name}:inside")
            tokens.append(lock.fencing_token)
    return tokens


def test_only_one_holder_at_a_time_and_fencing_tokens_strictly_increase(redis_url, name):
    run_forked(_contend, [(redis_url, name, 6)] * 8, timeout=40)

    raw = redis.Redis.from_url(redis_url)
    tokens = [int(token) for token in raw.lrange(f"{name}:tokens", 0, -1)]
    assert int(raw.get(f"{name}:counter")) == 48
    assert {int(v) for v in raw.lrange(f"{name}:overlap", 0, -1)} == {1}
    assert tokens == sorted(tokens) and len(set(tokens)) == 48  # in acquisition order, strictly rising


def test_only_the_owner_releases(shared, name):
    owner = DistributedLock(name, ttl=5, redis=shared)
    owner.acquire()
    stranger = DistributedLock(name, ttl=5, redis=shared)

    assert stranger.release() is False  # never acquired: nothing to release
    with pytest.raises(LockNotAcquired):
        stranger.acquire(wait=0.05)
    assert owner.held

    assert owner.release() is True
    stranger.acquire()
    assert stranger.release() is True


def test_the_lock_is_renewed_while_held(shared, name):
    holder = DistributedLock(name, ttl=0.8, redis=shared)
    holder.acquire()
    rival = DistributedLock(name, ttl=0.8, redis=shared)
    ends = time.monotonic() + 2.0  # well past two TTLs

    while time.monotonic() < ends:
        with pytest.raises(LockNotAcquired):
            rival.acquire(wait=0.1)
    assert holder.held
    holder.ensure_held()
    holder.release()


def test_a_lock_taken_over_is_reported_lost(redis_url, shared, name):
    holder = DistributedLock(name, ttl=0.3, redis=shared)
    holder.acquire()

    redis.Redis.from_url(redis_url).set(shared.key("lock", name), "someone-else")

    wait_until(lambda: not holder.held, timeout=3, interval=0.02, message="the holder to notice")
    with pytest.raises(LockLost):
        holder.ensure_held()
    assert holder.release() is False


def test_without_renewal_the_lease_expires(shared, name):
    holder = DistributedLock(name, ttl=0.2, auto_renew=False, redis=shared)
    first = holder.acquire()

    second = DistributedLock(name, redis=shared).acquire(wait=3)

    assert second > first
    assert not holder.held


def _hold_forever(url: str, name: str, tokens) -> None:
    lock = DistributedLock(name, ttl=1.0, redis=SharedRedis(url))
    tokens.put(lock.acquire())
    threading.Event().wait()  # hold (and renew) until killed


def test_a_killed_holders_lock_expires_and_the_next_token_is_larger(redis_url, shared, name):
    tokens = fork_context.Queue()
    child = fork_context.Process(target=_hold_forever, args=(redis_url, name, tokens))
    child.start()
    try:
        dead_token = tokens.get(timeout=20)
        rival = DistributedLock(name, ttl=5, redis=shared)
        with pytest.raises(LockNotAcquired):
            rival.acquire(wait=1.5)  # longer than the TTL: the child is renewing

        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=10)

        assert rival.acquire(wait=5) > dead_token
        rival.release()
    finally:
        if child.is_alive():
            child.kill()
            child.join(timeout=5)


def test_redis_unreachable_means_not_acquired(unreachable, name):
    with pytest.raises(LockNotAcquired, match="unavailable"):
        DistributedLock(name, redis=unreachable).acquire(wait=1)
