"""Rate limiter per key, shared by every process: GCRA in one Lua script, so it never over-admits.

GCRA (the generic cell rate algorithm) stores one number per key, the theoretical arrival time
(TAT) of the next request. With ``limit`` per ``period`` and a burst of ``burst``, each admitted
call pushes TAT forward by period/limit; a call is admitted while TAT - now stays within the burst
allowance. A burst of ``limit`` therefore admits exactly ``limit`` calls at once, then one every
period/limit. The check-and-update runs inside Redis, so concurrent callers cannot both take the
last slot.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from apps.core.resilience import metrics
from apps.core.resilience.errors import RateLimited
from apps.core.resilience.redis_state import LuaScript, SharedRedis, SharedStateUnavailable, shared_redis

# Microseconds from the server clock; %.0f keeps all digits (Lua's default number format keeps 14).
GCRA = LuaScript("""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
if allow_at > now then return {0, allow_at - now, 0} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, math.floor((tolerance - (new_tat - now)) / interval)}
""")


@dataclass(frozen=True)
class RateLimit:
    """``limit`` calls per ``period`` seconds, at most ``burst`` at once (default: ``limit``)."""

    limit: int
    period: float
    burst: int | None = None
    max_wait: float = 0.0  # how long ``acquire`` may wait for a slot before raising RateLimited

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0 or (self.burst is not None and self.burst < 1):
            raise ValueError("limit and burst must be >= 1 and period > 0")

    @property
    def interval_us(self) -> int:
        # Rounded up: a limiter may admit a hair fewer than asked, never more.
        return math.ceil(self.period * 1_000_000 / self.limit)

    @property
    def tolerance_us(self) -> int:
        return self.interval_us * (self.burst or self.limit)


@dataclass(frozen=True)
class RateDecision:
    """Whether the call may go ahead; if not, how many seconds until it could."""

    allowed: bool
    retry_after: float
    remaining: int


class RateLimiter:
    """A named limiter; ``check(key)`` answers, ``acquire(key)`` waits up to ``max_wait`` or raises."""

    def __init__(self, name: str, rate: RateLimit, *, redis: SharedRedis | None = None) -> None:
        self.name = name
        self.rate = rate
        self._redis = redis
        self._allowed = metrics.RATE_LIMIT_DECISIONS.labels(name, "allowed")
        self._denied = metrics.RATE_LIMIT_DECISIONS.labels(name, "denied")

    @property
    def redis(self) -> SharedRedis:
        return self._redis or shared_redis()

    def check(self, key: str = "", *, cost: int = 1) -> RateDecision:
        """Take ``cost`` slots for ``key`` if available now; never raises for Redis trouble."""
        if not 1 <= cost <= (self.rate.burst or self.rate.limit):
            raise ValueError(f"cost must be between 1 and the burst ({cost} asked of {self.name})")
        redis = self.redis
        try:
            allowed, wait_us, remaining = redis.run(
                GCRA, [redis.key("rate", f"{self.name}:{key}")], [self.rate.interval_us, self.rate.tolerance_us, cost]
            )
            decision = RateDecision(bool(allowed), int(wait_us) / 1_000_000, int(remaining))
        except SharedStateUnavailable:
            # Each process enforces the full limit on its own until Redis returns (documented).
            metrics.DEGRADED_CALLS.labels("rate_limit").inc()
            decision = _local.check(f"{self.name}:{key}", self.rate, cost)
        (self._allowed if decision.allowed else self._denied).inc()
        return decision

    def acquire(self, key: str = "", *, cost: int = 1, wait: float | None = None) -> None:
        """Take a slot, waiting up to ``wait`` (default ``rate.max_wait``) seconds; raise RateLimited otherwise."""
        budget = self.rate.max_wait if wait is None else wait
        deadline = time.monotonic() + budget
        while True:
            decision = self.check(key, cost=cost)
            if decision.allowed:
                return
            if time.monotonic() + decision.retry_after > deadline:
                raise RateLimited(self.name, retry_after=decision.retry_after)
            time.sleep(decision.retry_after)


class _LocalGcra:
    """The same algorithm over a dict, for when Redis is unreachable."""

    _MAX_KEYS = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}

    def check(self, key: str, rate: RateLimit, cost: int) -> RateDecision:
        now = time.monotonic() * 1_000_000
        with self._lock:
            if len(self._tat) > self._MAX_KEYS:
                self._tat = {k: v for k, v in self._tat.items() if v > now}
            tat = max(self._tat.get(key, 0.0), now)
            new_tat = tat + rate.interval_us * cost
            allow_at = new_tat - rate.tolerance_us
            if allow_at > now:
                return RateDecision(False, (allow_at - now) / 1_000_000, 0)
            self._tat[key] = new_tat
            return RateDecision(True, 0.0, math.floor((rate.tolerance_us - (new_tat - now)) / rate.interval_us))


_local = _LocalGcra()
