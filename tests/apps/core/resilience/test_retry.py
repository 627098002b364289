"""Retry policy: full-jitter backoff, attempt and time budgets, retry predicates, Celery translation."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from celery import Celery
from celery.utils.time import get_exponential_backoff_interval

from apps.core.resilience import RateLimited, RetryableStatus, RetryPolicy, celery_retry_options


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

    assert 2 < len(flaky.calls) < 100
    assert flaky.calls[-1] - flaky.calls[0] <= 0.4 + 0.1  # the budget, plus sleep() overshoot on a busy machine


def test_a_retry_after_on_the_error_is_honoured():
    flaky = Flaky(RateLimited("partner", retry_after=0.3))
    policy = RetryPolicy(max_attempts=2, base_delay=0.001, retry_on=(RateLimited,))

    assert policy.call(flaky) == "ok"
    assert flaky.calls[1] - flaky.calls[0] >= 0.3


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


def test_celery_options_match_the_policy_within_its_worst_case_budget():
    policy = RetryPolicy(max_attempts=10, base_delay=2, max_delay=30, max_total_delay=60,
                         retry_on=(ConnectionError,), retry_on_statuses={503})

    options = policy.celery_options()

    assert options == {
        "autoretry_for": (ConnectionError, RetryableStatus),
        "retry_backoff": 2,
        "retry_backoff_max": 30,
        "retry_jitter": True,
        "max_retries": 5,  # 2 + 4 + 8 + 16 + 30 (capped) = 60 fits the 60 s budget; a sixth would not
    }
    worst = sum(get_exponential_backoff_interval(2, n, 30, full_jitter=False) for n in range(options["max_retries"]))
    assert worst <= policy.max_total_delay


def test_celery_accepts_the_options():
    app = Celery("options-check", set_as_current=False)
    policy = RetryPolicy(max_attempts=3, base_delay=1, max_delay=10, retry_on=(ConnectionError,))

    def options_check() -> None:
        """A task body; Celery reads its signature."""

    task = app.task(name="resilience.options_check", **celery_retry_options(policy))(options_check)

    assert (task.autoretry_for, task.retry_backoff, task.retry_backoff_max, task.max_retries) == (
        (ConnectionError,), 1, 10, 2,
    )


def test_celery_options_refuse_what_celery_cannot_do_safely(settings):
    with pytest.raises(ValueError, match="retry_if"):
        RetryPolicy(retry_on=(OSError,), retry_if=bool).celery_options()
    settings.CELERY_VISIBILITY_TIMEOUT = 100
    with pytest.raises(ValueError, match="VISIBILITY"):
        RetryPolicy(max_delay=300).celery_options()


def test_raise_for_status_raises_only_for_retryable_statuses():
    policy = RetryPolicy(retry_on_statuses={429, 503})

    policy.raise_for_status(404)
    with pytest.raises(RetryableStatus) as raised:
        policy.raise_for_status(429, retry_after=3)
    assert (raised.value.status_code, raised.value.retry_after) == (429, 3)
