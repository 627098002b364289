"""Redis unreachable: breakers and limiters carry on with process-local state and never raise."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from apps.core.resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpen,
    RateLimit,
    RateLimiter,
    SharedRedis,
    metrics,
)
from tests.apps.core.resilience.samples import sample


def test_breaker_and_limiter_work_locally_and_warn_once(unreachable, name, caplog):
    caplog.set_level(logging.WARNING, logger="apps.core.resilience.redis_state")
    breaker = CircuitBreaker(name, BreakerPolicy(failure_threshold=2), redis=unreachable)
    limiter = RateLimiter(name, RateLimit(limit=2, period=60), redis=unreachable)

    breaker.record_failure(breaker.allow())
    breaker.record_failure(breaker.allow())
    decisions = [limiter.check().allowed for _ in range(3)]

    with pytest.raises(CircuitOpen):
        breaker.allow()  # the documented rejection, from local state
    assert breaker.state() == "open"
    assert decisions == [True, True, False]
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert sample(metrics.REDIS_UP, {}) == 0
    assert sample(metrics.DEGRADED_CALLS, {"primitive": "rate_limit"}, "_total") >= 3


def test_a_redis_that_never_answers_costs_one_timeout_then_nothing(name):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does), never replies
    try:
        store = SharedRedis(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.2, down_for=30)
        breaker = CircuitBreaker(name, BreakerPolicy(), redis=store)

        started = time.monotonic()
        breaker.record_success(breaker.allow())
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(100):
            breaker.record_success(breaker.allow())
        next_hundred = time.monotonic() - started
    finally:
        silent.close()

    assert first < 2  # one bounded timeout, not a hang
    assert next_hundred < first  # marked down: no further attempts until down_for passes


def test_no_redis_configured_means_process_local_state(settings, name):
    settings.RESILIENCE_REDIS_URL = ""
    settings.REDIS_URL = ""

    limiter = RateLimiter(name, RateLimit(limit=1, period=60))

    assert limiter.check().allowed
    assert not limiter.check().allowed
