"""Sagas that exist only for the engine's tests (real workers load them with ``--include``).

Their steps record every call in Redis (the suite's cache database, emptied before each test), so a
test can see the order of effects and count calls per idempotency key. What a step does is decided by
the saga's input: ``fail`` maps a step name to how many of its calls fail (-1: every call) and
whether the error is permanent; ``comp_fail`` does the same for compensations.
"""

from __future__ import annotations

import time

import redis
from django.conf import settings

from apps.core.heartbeats import heartbeat_record
from apps.core.resilience.retry import RetryPolicy
from apps.sagas.definitions import Signal, Step, StepContext, saga
from apps.sagas.waits import signal_subscribers_register

CALLS = "tests:sagas:calls"  # list of "<saga key>:<step>:<kind>:<attempt>", in call order
HOLD = "tests:sagas:hold"  # while set, the first call of a "slow" step waits (a test kills its worker then)
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.02, max_delay=0.1, retry_on=(Exception,))
APPROVAL = "tests.sagas.approval"


class Declined(Exception):
    """A business failure: the step marks it permanent."""


class Flaky(Exception):
    """A transient failure: retried."""


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def calls() -> list[str]:
    """Every recorded call, oldest first."""
    return [item.decode() for item in _redis().lrange(CALLS, 0, -1)]


def calls_of(idempotency_key: str) -> int:
    """How many times a step ran with this idempotency key."""
    return int(_redis().get(f"tests:sagas:key:{idempotency_key}") or 0)


def _record(ctx: StepContext, kind: str) -> int:
    client = _redis()
    client.rpush(CALLS, f"{ctx.key}:{ctx.step}:{kind}:{ctx.attempt}")
    return int(client.incr(f"tests:sagas:key:{ctx.idempotency_key}"))


def _maybe_fail(ctx: StepContext, plan: dict, calls_so_far: int) -> None:
    rule = plan.get(ctx.step)
    if rule is None:
        return
    times = rule.get("times", -1)
    if times == -1 or calls_so_far <= times:
        raise (Declined if rule.get("permanent") else Flaky)(f"{ctx.step} fails (call {calls_so_far})")


def act(ctx: StepContext) -> dict:
    """A step's action: records the call, fails as the input says, returns one key for the context."""
    count = _record(ctx, "action")
    if count <= ctx.data.get("outage", {}).get(ctx.step, 0):
        raise redis.ConnectionError("injected: Redis is unreachable")
    _maybe_fail(ctx, ctx.data.get("fail", {}), count)
    return {f"{ctx.step}_done": True, f"{ctx.step}_key": ctx.idempotency_key}


def compensate(ctx: StepContext) -> dict:
    """A step's compensation: records the call, fails as the input says."""
    count = _record(ctx, "compensation")
    _maybe_fail(ctx, ctx.data.get("comp_fail", {}), count)
    return {f"{ctx.step}_undone": True}


def slow(ctx: StepContext) -> dict:
    """Like ``act``, but the first call waits while the HOLD flag is set (up to a minute)."""
    count = _record(ctx, "action")
    if count == 1:
        deadline = time.monotonic() + 60
        while _redis().exists(HOLD) and time.monotonic() < deadline:
            time.sleep(0.05)
    return {f"{ctx.step}_done": True}


def write_in_transaction(ctx: StepContext) -> dict:
    """Writes a heartbeat row named after the attempt, then fails as the input says (the row must roll back)."""
    heartbeat_record(name=f"saga:{ctx.key}:{ctx.attempt}")
    _maybe_fail(ctx, ctx.data.get("fail", {}), ctx.attempt)
    return {"written": ctx.attempt}


def noop(ctx: StepContext) -> None:
    """Does nothing (the benchmark's steps)."""
    return None


def _step(name: str, **options) -> Step:
    options.setdefault("retry", FAST_RETRY)
    return Step(name, action=act, compensation=compensate, permanent=(Declined,), **options)


THREE = saga("tests.three", steps=[
    _step("a"),
    _step("b"),
    _step("optional", when=lambda data: bool(data.get("with_optional"))),
    _step("c"),
])
PIVOT = saga("tests.pivot", steps=[_step("a"), _step("p", pivot=True), _step("after")])
SIGNAL = saga("tests.signal", steps=[_step("a"), Step("approval", signal=Signal(APPROVAL, timeout_seconds=120)),
                                     _step("c")])
SIGNAL_SHORT = saga("tests.signal_short", steps=[
    _step("a"), Step("approval", signal=Signal(APPROVAL, timeout_seconds=1)), _step("c")])
SLOW = saga("tests.slow", steps=[
    _step("a"),
    Step("slow", action=slow, compensation=compensate, retry=FAST_RETRY, start_to_close_seconds=3),
    _step("c"),
])
NOT_STARTED = saga("tests.schedule_to_start", steps=[
    _step("a", schedule_to_start_seconds=1, retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01,
                                                              retry_on=(Exception,)))])
SCHEDULE_TO_CLOSE = saga("tests.schedule_to_close", steps=[
    _step("a"),
    _step("b", schedule_to_close_seconds=30, retry=RetryPolicy(max_attempts=50, base_delay=0.01, max_delay=0.01,
                                                              retry_on=(Exception,)))])
DEADLINE = saga("tests.deadline", deadline_seconds=1, steps=[
    _step("a"), Step("approval", signal=Signal(APPROVAL, timeout_seconds=600))])
IN_TRANSACTION = saga("tests.in_transaction", steps=[
    Step("write", action=write_in_transaction, retry=FAST_RETRY, in_transaction=True)])
NOOP = saga("tests.noop", steps=[Step(name, action=noop) for name in ("one", "two", "three")])

signal_subscribers_register()
