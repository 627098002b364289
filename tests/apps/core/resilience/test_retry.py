"""Retry policy: full-jitter backoff, attempt and time budgets, retry predicates.

Timing bounds here only catch hangs (issue 15, smaller debts): a busy shared machine may oversleep.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

import apps.core.resilience as resilience
from apps.core.resilience import RateLimited, RetryableStatus, RetryPolicy

# Far above any wait these tests configure: exceeding it means a hang, not a slow machine.
HANG = 10.0


class Flaky:
    """Fails with ``errors`` in turn, then returns "ok"; records when each call happened."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls: list[float] = []

    def __call__(self) -> str:
        self.calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    policy = RetryPolicy(base_delay=0.1, max_delay=0.5)

    for retry_number, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.5), (10, 0.5)]:
        waits = [policy.backoff(retry_number) for _ in range(300)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.8 and min(waits) < ceiling * 0.2  # spread over the whole range


def test_retries_listed_errors_until_success():
    flaky = Flaky(ConnectionError(), ConnectionError())
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, retry_on=(ConnectionError,))

    assert policy.call(flaky) == "ok"
    assert len(flaky.calls) == 3


def test_gives_up_after_max_attempts_with_the_last_error():
    flaky = Flaky(*(ConnectionError(str(i)) for i in range(5)))

    @RetryPolicy(max_attempts=3, base_delay=0.01, retry_on=(ConnectionError,))
    def call():
        return flaky()

    with pytest.raises(ConnectionError, match="2"):
        call()
    assert len(flaky.calls) == 3


def test_other_errors_and_rejected_predicates_are_not_retried():
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, retry_on=(OSError,), retry_if=lambda exc: exc.errno != 13)
    unlisted, refused = Flaky(ValueError()), Flaky(PermissionError(13, "denied"))

    with pytest.raises(ValueError):
        policy.call(unlisted)
    with pytest.raises(PermissionError):
        policy.call(refused)
    assert len(unlisted.calls) == len(refused.calls) == 1


def test_no_retry_starts_after_max_total_delay():
    flaky = Flaky(*(TimeoutError() for _ in range(100)))
    policy = RetryPolicy(max_attempts=100, base_delay=0.05, max_delay=0.1, max_total_delay=0.4,
                         retry_on=(TimeoutError,))

    with pytest.raises(TimeoutError):
        policy.call(flaky)

    assert 2 < len(flaky.calls) < 100  # the budget, not max_attempts, ended the retries
    assert flaky.calls[-1] - flaky.calls[0] < 0.4 + HANG


def test_a_retry_after_on_the_error_is_honoured():
    flaky = Flaky(RateLimited("partner", retry_after=0.3))
    policy = RetryPolicy(max_attempts=2, base_delay=0.001, retry_on=(RateLimited,))

    assert policy.call(flaky) == "ok"
    assert 0.3 <= flaky.calls[1] - flaky.calls[0] < 0.3 + HANG  # sleep() never returns early


def test_a_retry_after_beyond_the_budget_means_no_retry():
    flaky = Flaky(RateLimited("partner", retry_after=5))
    policy = RetryPolicy(max_attempts=3, max_total_delay=1, retry_on=(RateLimited,))

    with pytest.raises(RateLimited):
        policy.call(flaky)
    assert len(flaky.calls) == 1


def test_results_with_a_retryable_status_are_retried_and_the_last_returned():
    answers = iter([503, 503, 200])
    always = iter([503] * 5)
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, retry_on_statuses={503})

    assert policy.call(lambda: SimpleNamespace(status_code=next(answers))).status_code == 200
    assert policy.call(lambda: SimpleNamespace(status_code=next(always))).status_code == 503
    assert next(always) == 503 and next(always) == 503  # three of five used: attempts are bounded


def test_tasks_get_no_celery_autoretry_options_from_a_policy():
    """Issue 15 §2: task retries go through the outbox (workers/task.py), never Celery countdowns."""
    assert not hasattr(RetryPolicy(), "celery_options")
    assert not hasattr(resilience, "celery_retry_options")


def test_raise_for_status_raises_only_for_retryable_statuses():
    policy = RetryPolicy(retry_on_statuses={429, 503})

    policy.raise_for_status(404)
    with pytest.raises(RetryableStatus) as raised:
        policy.raise_for_status(429, retry_after=3)
    assert (raised.value.status_code, raised.value.retry_after) == (429, 3)
