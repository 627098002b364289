"""Distributed lock in Redis: owner token, fencing token, renewal while held, release only by owner.

A lock alone cannot stop a paused holder (GC, swap, a stopped VM) from writing after its lease ran
out; the fencing token can. Every acquisition gets a number larger than any before it for that
lock name; pass it along with the protected write and have the store reject numbers older than
the newest it has seen.

When Redis is unreachable the lock is not granted (LockNotAcquired): a process-local "lock"
would give no mutual exclusion at all, so this primitive fails closed.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from types import TracebackType

from apps.core.resilience import metrics
from apps.core.resilience.errors import LockLost, LockNotAcquired
from apps.core.resilience.leases import keeper
from apps.core.resilience.redis_state import LuaScript, SharedRedis, SharedStateUnavailable, shared_redis

logger = logging.getLogger(__name__)

# The fence counter starts from the server clock in microseconds, so tokens keep rising even if
# Redis loses the counter (restart without persistence) - unless it hands out a million a second.
ACQUIRE = LuaScript("""
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('EXISTS', KEYS[2]) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
  end
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
""")
RENEW = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")
RELEASE = LuaScript("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# Polling while waiting: start fast (a release is often imminent), back off to bound Redis load.
_FIRST_POLL, _MAX_POLL = 0.002, 0.1


class DistributedLock:
    """A named lock; one object is one would-be owner. ``with DistributedLock("x", wait=5) as lock:``."""

    def __init__(
        self, name: str, *, ttl: float | None = None, wait: float = 0.0, auto_renew: bool = True,
        redis: SharedRedis | None = None,
    ) -> None:
        if ttl is None:
            from django.conf import settings

            ttl = float(settings.LOCK_TTL_SECONDS)
        self.name = name
        self.ttl = ttl
        self.wait = wait
        self.auto_renew = auto_renew
        self.fencing_token: int | None = None
        self._redis = redis
        self._token: str | None = None
        self._valid_until = 0.0
        self._lost = threading.Event()
        self._handle: int | None = None

    @property
    def redis(self) -> SharedRedis:
        return self._redis or shared_redis()

    @property
    def held(self) -> bool:
        """True while this owner holds the lock as far as it can tell (not lost, not past its lease)."""
        return self._token is not None and not self._lost.is_set() and time.monotonic() < self._valid_until

    def acquire(self, *, wait: float | None = None) -> int:
        """Take the lock, waiting up to ``wait`` seconds; return the fencing token or raise LockNotAcquired."""
        if self._token is not None:
            raise RuntimeError(f"lock {self.name!r} is already held by this object")
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        token = secrets.token_hex(16)
        poll = _FIRST_POLL
        while True:
            started = time.monotonic()
            try:
                ok, value = self._run(ACQUIRE, token, self._ttl_ms)
            except SharedStateUnavailable as exc:
                metrics.LOCK_EVENTS.labels(self.name, "unavailable").inc()
                raise LockNotAcquired(self.name, "shared state (Redis) is unavailable") from exc
            if ok:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                metrics.LOCK_EVENTS.labels(self.name, "busy").inc()
                raise LockNotAcquired(self.name)
            # Never sleep past the holder's expiry or our deadline; jitter spreads competing pollers.
            holder_left = value / 1000 if value > 0 else poll
            time.sleep(min(poll * random.uniform(0.5, 1.0), holder_left, remaining))  # noqa: S311
            poll = min(poll * 2, _MAX_POLL)
        self._token, self.fencing_token = token, int(value)
        self._valid_until = started + self.ttl
        self._lost.clear()
        if self.auto_renew:
            self._handle = keeper.keep(self._renew, ttl=self.ttl, on_lost=self._on_lost)
        metrics.LOCK_EVENTS.labels(self.name, "acquired").inc()
        return self.fencing_token

    def release(self) -> bool:
        """Release if still ours; False when it had expired or another owner holds it now."""
        token, self._token = self._token, None
        if self._handle is not None:
            keeper.drop(self._handle)
            self._handle = None
        if token is None:
            return False
        try:
            released = bool(self._run(RELEASE, token))
        except SharedStateUnavailable:
            # It expires on its own after the TTL; nobody else's lock is touched.
            logger.warning("Could not release lock %s: Redis unavailable; it expires within %.1fs", self.name, self.ttl)
            return False
        metrics.LOCK_EVENTS.labels(self.name, "released" if released else "lost").inc()
        return released

    def ensure_held(self) -> None:
        """Raise LockLost unless the lock is still held; call before a write that relies on it."""
        if not self.held:
            raise LockLost(self.name)

    def __enter__(self) -> DistributedLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    def _run(self, script: LuaScript, *args: object) -> list | int:
        redis = self.redis
        keys = [redis.key("lock", self.name), redis.key("lock", self.name, "fence")]
        return redis.run(script, keys if script is ACQUIRE else keys[:1], args)

    def _renew(self) -> bool:
        token = self._token
        if token is None:
            return False
        started = time.monotonic()
        renewed = bool(self._run(RENEW, token, self._ttl_ms))
        if renewed:
            self._valid_until = started + self.ttl
        return renewed

    def _on_lost(self) -> None:
        self._lost.set()
        metrics.LOCK_EVENTS.labels(self.name, "lost").inc()
        logger.warning("Lock %s lost while held (expired or taken over); its fencing token is stale", self.name)
