"""Errors the resilience kit raises. Each is a TaskplaneError, so an API view that lets one escape
answers with a problem response (503/429/409) instead of a 500."""

from __future__ import annotations

from apps.core.errors import TaskplaneError


class ResilienceError(TaskplaneError):
    """Base of the kit's errors: a dependency is protected from this call, not broken by it."""

    status, title, slug = 503, "Service unavailable", "dependency-unavailable"


class CircuitOpen(ResilienceError):
    """The breaker rejected the call; ``retry_after`` says when it will let a trial through."""

    slug = "circuit-open"

    def __init__(self, breaker: str, *, retry_after: float) -> None:
        super().__init__(f"Circuit {breaker!r} is open; retry in {retry_after:.1f}s.")
        self.breaker = breaker
        self.retry_after = retry_after


class RateLimited(ResilienceError):
    """The limiter refused the call; ``retry_after`` is when the next one will be admitted."""

    status, title, slug = 429, "Too many requests", "rate-limited"

    def __init__(self, limiter: str, *, retry_after: float) -> None:
        super().__init__(f"Rate limit {limiter!r} exceeded; retry in {retry_after:.2f}s.")
        self.limiter = limiter
        self.retry_after = retry_after


class BulkheadFull(ResilienceError):
    """Every slot of the bulkhead is taken and none freed up within the allowed wait."""

    slug = "bulkhead-full"

    def __init__(self, bulkhead: str) -> None:
        super().__init__(f"Bulkhead {bulkhead!r} is full.")
        self.bulkhead = bulkhead


class LockNotAcquired(ResilienceError):
    """Another owner held the lock for the whole wait, or Redis could not be reached to take it."""

    status, title, slug = 409, "Conflict", "lock-not-acquired"

    def __init__(self, lock: str, reason: str = "held by another owner") -> None:
        super().__init__(f"Lock {lock!r} not acquired: {reason}.")
        self.lock = lock


class LockLost(ResilienceError):
    """The lock expired or was taken over while its holder still believed it owned it."""

    status, title, slug = 409, "Conflict", "lock-lost"

    def __init__(self, lock: str) -> None:
        super().__init__(f"Lock {lock!r} is no longer held by this owner.")
        self.lock = lock


class RetryableStatus(ResilienceError):
    """An HTTP status the retry policy treats as transient, raised so a retry (in-process or a task's) sees it."""

    slug = "retryable-status"

    def __init__(self, status_code: int, *, retry_after: float | None = None) -> None:
        super().__init__(f"Upstream answered {status_code}.")
        self.status_code = status_code
        self.retry_after = retry_after
