"""Retry policy: exponential backoff with full jitter, bounded by attempts and by total time.

One policy object serves two uses: a decorator (``@policy``) and an explicit ``policy.call(fn)``.
It retries inside one process. A Celery task that fails is retried by the platform's task failure
policy instead, through the outbox (workers/task.py; never Celery autoretry or broker countdowns).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from apps.core.backoff import full_jitter_delay
from apps.core.resilience.errors import RetryableStatus

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and how long to wait; see docs/resilience.md."""

    max_attempts: int = 3
    base_delay: float = 0.2  # the first retry waits up to this long; each next one up to twice as long
    max_delay: float = 5.0  # cap on any single backoff wait
    max_total_delay: float = 15.0  # no retry starts later than this after the first attempt began
    retry_on: tuple[type[BaseException], ...] = ()
    retry_on_statuses: frozenset[int] = field(default_factory=frozenset)
    retry_if: Callable[[BaseException], bool] | None = None  # extra test for exceptions retry_on lets through

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.max_total_delay) < 0:
            raise ValueError("delays must not be negative")
        object.__setattr__(self, "retry_on", tuple(self.retry_on))
        object.__setattr__(self, "retry_on_statuses", frozenset(self.retry_on_statuses))

    def backoff(self, retry_number: int) -> float:
        """Full-jitter wait before retry ``retry_number`` (0 for the first retry)."""
        return full_jitter_delay(retry_number, base=self.base_delay, cap=self.max_delay)

    def should_retry(self, exc: BaseException) -> bool:
        """True when ``exc`` is one this policy retries."""
        if not isinstance(exc, self.retry_on):
            return False
        return self.retry_if is None or self.retry_if(exc)

    def should_retry_status(self, status: int) -> bool:
        """True when an HTTP status is one this policy retries."""
        return status in self.retry_on_statuses

    def schedule(self) -> RetrySchedule:
        """Start tracking the attempts of one call."""
        return RetrySchedule(self)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn`` and retry it as the policy says; the last error or result is what the caller gets."""
        schedule = self.schedule()
        while True:
            schedule.start_attempt()
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                delay = schedule.next_delay(at_least=retry_after_of(exc)) if self.should_retry(exc) else None
                if delay is None:
                    raise
                _log_retry(fn, schedule.attempt, delay, repr(exc))
            else:
                status = getattr(result, "status_code", None)
                if not isinstance(status, int) or not self.should_retry_status(status):
                    return result
                delay = schedule.next_delay()
                if delay is None:
                    return result
                _log_retry(fn, schedule.attempt, delay, f"status {status}")
            time.sleep(delay)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` so every call goes through ``call``."""

        @functools.wraps(fn)
        def retrying(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call(fn, *args, **kwargs)

        return retrying

    def raise_for_status(self, status: int, *, retry_after: float | None = None) -> None:
        """Raise RetryableStatus for a retryable HTTP status (a task's failure policy then retries it)."""
        if self.should_retry_status(status):
            raise RetryableStatus(status, retry_after=retry_after)


class RetrySchedule:
    """The retry state of one call: attempts started, the time budget left, the next wait."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempt = 0
        self.started = time.monotonic()

    def start_attempt(self) -> None:
        """Count an attempt as started."""
        self.attempt += 1

    def next_delay(self, *, at_least: float = 0.0) -> float | None:
        """Seconds to wait before the next attempt, or None when attempts or time budget are spent.

        ``at_least`` is a server's Retry-After: honoured even above ``max_delay``, but a wait that
        would start a retry after ``max_total_delay`` means no retry at all.
        """
        if self.attempt >= self.policy.max_attempts:
            return None
        delay = max(self.policy.backoff(self.attempt - 1), at_least)
        elapsed = time.monotonic() - self.started
        if elapsed + delay > self.policy.max_total_delay:
            return None
        return delay


def retry_after_of(exc: BaseException) -> float:
    """Seconds the error asks to wait before a retry (RateLimited, CircuitOpen, RetryableStatus), else 0."""
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) else 0.0


def _log_retry(fn: Callable[..., Any], attempt: int, delay: float, reason: str) -> None:
    logger.info(
        "Retrying %s after attempt %d in %.3fs: %s", getattr(fn, "__qualname__", fn), attempt, delay, reason,
        extra={"retry_attempt": attempt, "retry_delay": round(delay, 3)},
    )
