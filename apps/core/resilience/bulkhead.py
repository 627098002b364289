"""Bulkheads: a bound on concurrent calls to one dependency, so a slow one cannot take every thread.

``LocalBulkhead`` bounds the threads of one process. ``DistributedBulkhead`` bounds every process
together with leases in a Redis sorted set (member: slot token, score: lease expiry); a holder
that dies stops renewing, and its slot frees itself when the lease runs out.
"""

from __future__ import annotations

import functools
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from apps.core.resilience import metrics
from apps.core.resilience.errors import BulkheadFull
from apps.core.resilience.leases import keeper
from apps.core.resilience.redis_state import LuaScript, SharedRedis, SharedStateUnavailable, shared_redis

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

ACQUIRE = LuaScript("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease)
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(first[2]) - now}
""")
# Every member expires no later than now + lease, so the key's TTL can be reset to one lease.
RENEW = LuaScript("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""")
RELEASE = LuaScript("return redis.call('ZREM', KEYS[1], ARGV[1])")


class LocalBulkhead:
    """At most ``limit`` concurrent calls in this process; others wait up to ``max_wait`` then fail."""

    def __init__(self, name: str, limit: int, *, max_wait: float = 0.0) -> None:
        self.name = name
        self.limit = limit
        self.max_wait = max_wait
        self._slots = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the block, or raise BulkheadFull."""
        if self.max_wait > 0:
            acquired = self._slots.acquire(timeout=self.max_wait)
        else:
            acquired = self._slots.acquire(blocking=False)
        if not acquired:
            metrics.BULKHEAD_REJECTED.labels(self.name).inc()
            raise BulkheadFull(self.name)
        try:
            yield
        finally:
            self._slots.release()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` so each call holds a slot."""
        return _decorate(self, fn)


class DistributedBulkhead:
    """At most ``limit`` concurrent calls across all processes, held as renewed leases in Redis."""

    def __init__(
        self, name: str, limit: int, *, max_wait: float = 0.0, lease: float | None = None,
        redis: SharedRedis | None = None,
    ) -> None:
        if lease is None:
            from django.conf import settings

            lease = float(settings.BULKHEAD_LEASE_SECONDS)
        self.name = name
        self.limit = limit
        self.max_wait = max_wait
        self.lease = lease
        self._redis = redis
        # While Redis is down each process falls back to its own bound of the same size.
        self._fallback = LocalBulkhead(name, limit, max_wait=max_wait)

    @property
    def redis(self) -> SharedRedis:
        return self._redis or shared_redis()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the block (renewed while held), or raise BulkheadFull."""
        token = secrets.token_hex(16)
        try:
            self._acquire(token)
        except SharedStateUnavailable:
            metrics.DEGRADED_CALLS.labels("bulkhead").inc()
            with self._fallback.slot():
                yield
            return
        handle = keeper.keep(lambda: bool(self._run(RENEW, token, self._lease_ms)), ttl=self.lease,
                             on_lost=lambda: logger.warning("Bulkhead %s lost a slot lease while held", self.name))
        try:
            yield
        finally:
            keeper.drop(handle)
            try:
                self._run(RELEASE, token)
            except SharedStateUnavailable:
                logger.warning("Could not release a %s bulkhead slot: Redis unavailable; its lease expires", self.name)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` so each call holds a slot."""
        return _decorate(self, fn)

    @property
    def _lease_ms(self) -> int:
        return max(1, round(self.lease * 1000))

    def _acquire(self, token: str) -> None:
        deadline = time.monotonic() + self.max_wait
        poll = 0.005
        while True:
            ok, wait_ms = self._run(ACQUIRE, token, self.limit, self._lease_ms)
            if ok:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                metrics.BULKHEAD_REJECTED.labels(self.name).inc()
                raise BulkheadFull(self.name)
            time.sleep(min(poll * random.uniform(0.5, 1.0), max(wait_ms, 1) / 1000, remaining))  # noqa: S311
            poll = min(poll * 2, 0.1)

    def _run(self, script: LuaScript, *args: object) -> list | int:
        redis = self.redis
        return redis.run(script, [redis.key("bulkhead", self.name)], args)


def _decorate(bulkhead: LocalBulkhead | DistributedBulkhead, fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def bounded(*args: P.args, **kwargs: P.kwargs) -> R:
        with bulkhead.slot():
            return fn(*args, **kwargs)

    return bounded
