"""Resilience kit: retry, circuit breaker, rate limiter, bulkheads, distributed lock, timeouts.

Breaker, limiter, distributed bulkhead and lock state lives in Redis and is shared by every web and
worker process. See docs/resilience.md for each pattern, its settings and when to use it.
"""

from apps.core.resilience.breaker import BreakerPolicy, CircuitBreaker, Permit
from apps.core.resilience.bulkhead import DistributedBulkhead, LocalBulkhead
from apps.core.resilience.errors import (
    BulkheadFull,
    CircuitOpen,
    LockLost,
    LockNotAcquired,
    RateLimited,
    ResilienceError,
    RetryableStatus,
)
from apps.core.resilience.lock import DistributedLock
from apps.core.resilience.rate_limit import RateDecision, RateLimit, RateLimiter
from apps.core.resilience.redis_state import SharedRedis, shared_redis
from apps.core.resilience.retry import RetryPolicy, RetrySchedule
from apps.core.resilience.timeouts import Deadline, HttpTimeout

__all__ = [
    "BreakerPolicy",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitOpen",
    "Deadline",
    "DistributedBulkhead",
    "DistributedLock",
    "HttpTimeout",
    "LocalBulkhead",
    "LockLost",
    "LockNotAcquired",
    "Permit",
    "RateDecision",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "ResilienceError",
    "RetryPolicy",
    "RetrySchedule",
    "RetryableStatus",
    "SharedRedis",
    "shared_redis",
]
