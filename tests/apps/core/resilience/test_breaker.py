"""Circuit breaker: thresholds, half-open trials, generations, fallback, and state shared across processes."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from apps.core.resilience import BreakerPolicy, CircuitBreaker, CircuitOpen, SharedRedis, metrics
from apps.core.resilience.breaker_state import LocalBreakerState
from tests.apps.core.resilience.forked import run_forked
from tests.apps.core.resilience.samples import sample
from tests.helpers import wait_until

POLICY = BreakerPolicy(
    failure_threshold=3, failure_rate_percent=50, minimum_calls=10, window=10, open_for=30, half_open_calls=1
)
# Half-open after 0.3 s. Assertions about what follows look through a POLICY (30 s) breaker of the
# same name: the open period is an argument of each call, so a slow machine cannot let the short
# period run out again between an action and the check of its effect.
QUICK = replace(POLICY, open_for=0.3)


@pytest.fixture(params=["redis", "process-local"])
def store(request, shared, unreachable) -> SharedRedis:
    """Every scenario runs against Redis and against the fallback used when Redis is unreachable."""
    return shared if request.param == "redis" else unreachable


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.record_failure(breaker.allow())


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.record_success(breaker.allow())


def wait_half_open(breaker: CircuitBreaker) -> None:
    wait_until(lambda: breaker.state() == "half_open", timeout=5, interval=0.02, message="half-open")


def test_consecutive_failures_open_the_circuit(store, name):
    breaker = CircuitBreaker(name, POLICY, redis=store)
    fail(breaker, 2)
    succeed(breaker)  # a success ends the streak
    fail(breaker, 2)
    assert breaker.state() == "closed"

    fail(breaker)

    assert breaker.state() == "open"
    with pytest.raises(CircuitOpen) as rejected:
        breaker.allow()
    assert 0 < rejected.value.retry_after <= POLICY.open_for


def test_failure_rate_over_the_window_opens_once_enough_calls_were_seen(store, name):
    breaker = CircuitBreaker(name, replace(POLICY, failure_threshold=100), redis=store)
    for _ in range(4):
        succeed(breaker)
        fail(breaker)
    assert breaker.state() == "closed"  # 50% failures, but only 8 of the 10 calls needed

    succeed(breaker)
    fail(breaker)

    assert breaker.state() == "open"


def test_a_successful_trial_closes_the_circuit(store, name):
    breaker, patient = CircuitBreaker(name, QUICK, redis=store), CircuitBreaker(name, POLICY, redis=store)
    fail(breaker, 3)
    wait_half_open(breaker)

    trial = breaker.allow()
    assert trial.trial
    with pytest.raises(CircuitOpen):
        patient.allow()  # one trial at a time
    breaker.record_success(trial)

    assert breaker.state() == "closed"
    succeed(breaker, 5)


def test_a_failed_trial_opens_the_circuit_again(store, name):
    breaker, patient = CircuitBreaker(name, QUICK, redis=store), CircuitBreaker(name, POLICY, redis=store)
    fail(breaker, 3)
    wait_half_open(breaker)

    breaker.record_failure(breaker.allow())

    assert patient.state() == "open"
    with pytest.raises(CircuitOpen):
        patient.allow()


def test_results_of_calls_started_before_the_circuit_opened_are_ignored(store, name):
    breaker = CircuitBreaker(name, QUICK, redis=store)
    slow_call = breaker.allow()
    fail(breaker, 3)
    wait_half_open(breaker)
    trial = breaker.allow()

    breaker.record_success(slow_call)  # a late answer from the old, closed period
    assert breaker.state() == "half_open"

    breaker.record_success(trial)
    assert breaker.state() == "closed"


def test_trials_that_never_report_do_not_wedge_the_circuit(store, name):
    breaker = CircuitBreaker(name, QUICK, redis=store)
    fail(breaker, 3)
    wait_half_open(breaker)
    breaker.allow()  # a trial whose caller died: never recorded

    trial = wait_until(lambda: _try_allow(breaker), timeout=5, interval=0.02, message="a fresh trial")

    breaker.record_success(trial)
    assert breaker.state() == "closed"


def _try_allow(breaker):
    try:
        return breaker.allow()
    except CircuitOpen:
        return None


def test_call_uses_the_fallback_when_open_and_on_counted_failures(store, name):
    breaker = CircuitBreaker(name, replace(POLICY, ignore=(KeyError,)), redis=store)

    def broken():
        raise ConnectionError("down")

    assert breaker.call(broken, fallback=lambda exc: f"fallback: {type(exc).__name__}") == "fallback: ConnectionError"
    with pytest.raises(KeyError):
        breaker.call(lambda: {}["missing"], fallback=lambda exc: "unused")  # ignored errors are the caller's
    fail(breaker, 3)
    assert breaker.call(lambda: "real", fallback=lambda exc: type(exc).__name__) == "CircuitOpen"


def test_decorator_counts_failures(store, name):
    breaker = CircuitBreaker(name, POLICY, redis=store)

    @breaker
    def flaky():
        raise TimeoutError

    for _ in range(3):
        with pytest.raises(TimeoutError):
            flaky()
    with pytest.raises(CircuitOpen):
        flaky()


def test_state_changes_are_logged_and_exported(shared, name, caplog):
    breaker = CircuitBreaker(name, QUICK, redis=shared)
    caplog.set_level(logging.INFO, logger="apps.core.resilience.breaker")

    fail(breaker, 3)
    wait_half_open(breaker)
    breaker.record_success(breaker.allow())

    changes = [(r.from_state, r.to_state) for r in caplog.records if getattr(r, "breaker", None) == name]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    opened = {"breaker": name, "from_state": "closed", "to_state": "open"}
    assert sample(metrics.BREAKER_TRANSITIONS, opened, "_total") == 1
    assert sample(metrics.BREAKER_STATE, {"breaker": name}) == 0


# --- across processes ---------------------------------------------------------------------------

def _open_in_child(url: str, name: str) -> str:
    breaker = CircuitBreaker(name, POLICY, redis=SharedRedis(url))
    fail(breaker, 3)
    return breaker.state()


def _allow_in_child(url: str, name: str, half_open_calls: int = 1) -> str:
    policy = replace(POLICY, half_open_calls=half_open_calls)
    try:
        permit = CircuitBreaker(name, policy, redis=SharedRedis(url)).allow()
    except CircuitOpen:
        return "rejected"
    return "trial" if permit.trial else "allowed"


def test_a_circuit_opened_in_one_process_is_open_in_every_other(redis_url, shared, name):
    assert run_forked(_open_in_child, [(redis_url, name)], timeout=20) == ["open"]

    assert CircuitBreaker(name, POLICY, redis=shared).state() == "open"
    assert run_forked(_allow_in_child, [(redis_url, name)] * 3, timeout=20) == ["rejected"] * 3


def test_half_open_trials_are_bounded_across_processes(redis_url, shared, name):
    breaker = CircuitBreaker(name, replace(QUICK, half_open_calls=3), redis=shared)
    fail(breaker, 3)
    wait_half_open(breaker)
    assert breaker.allow().trial  # the first of three trials; two are left for the other processes

    outcomes = run_forked(_allow_in_child, [(redis_url, name, 3)] * 5, timeout=20)

    assert sorted(outcomes) == ["rejected"] * 3 + ["trial"] * 2



def test_process_local_state_is_bounded_and_keeps_the_recently_used_breakers():
    """issue 15 §12: breaker names come from user-supplied hosts; the fallback state must not grow without bound."""
    state = LocalBreakerState(max_breakers=3)
    limits = POLICY.thresholds()

    def open_circuit(name: str) -> None:
        for _ in range(POLICY.failure_threshold):
            decision = state.allow(name, limits)
            state.record(name, limits, ok=False, generation=decision.generation)

    open_circuit("active")
    for index in range(100):
        state.allow(f"host-{index}", limits)  # a stream of one-off hosts
        assert not state.allow("active", limits).allowed  # the host in use keeps its open circuit

    assert len(state) == 3
    assert state.peek("host-0", limits) == ("closed", 0)  # long forgotten: a fresh breaker
