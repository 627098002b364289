"""Circuit breaker whose state every process shares through Redis.

Twenty workers calling one failing dependency should stop together, not each after its own five
failures; so state lives in Redis. If Redis itself fails, each process carries on with local state
(and says so in the log) rather than turning a Redis outage into an outage of every caller.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

from apps.core.resilience import metrics
from apps.core.resilience.breaker_state import (
    ALLOW,
    PEEK,
    RECORD,
    LocalBreakerState,
    Thresholds,
    parse_decision,
    parse_record,
)
from apps.core.resilience.errors import CircuitOpen
from apps.core.resilience.redis_state import SharedRedis, SharedStateUnavailable, shared_redis

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
_STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
_local_state = LocalBreakerState()  # one per process, shared by every breaker object of the same name


@dataclass(frozen=True)
class BreakerPolicy:
    """When a circuit opens and how it recovers; ``from_settings`` fills the BREAKER_* defaults."""

    failure_threshold: int = 5  # consecutive failures that open the circuit
    failure_rate_percent: int = 50  # ...or this share of failures over the window
    minimum_calls: int = 20  # ...once the window holds at least this many calls
    window: float = 60.0  # seconds
    open_for: float = 30.0  # seconds before trial calls are let through
    half_open_calls: int = 1  # concurrent trials allowed; this many successes close the circuit
    failure_on: tuple[type[BaseException], ...] = (Exception,)
    ignore: tuple[type[BaseException], ...] = ()  # errors that say nothing about the dependency's health

    @classmethod
    def from_settings(cls, **overrides: Any) -> BreakerPolicy:
        """Policy from the BREAKER_* settings, with keyword overrides."""
        from django.conf import settings

        base = cls(
            failure_threshold=settings.BREAKER_FAILURE_THRESHOLD,
            failure_rate_percent=settings.BREAKER_FAILURE_RATE_PERCENT,
            minimum_calls=settings.BREAKER_MINIMUM_CALLS,
            window=settings.BREAKER_WINDOW_SECONDS,
            open_for=settings.BREAKER_OPEN_SECONDS,
            half_open_calls=settings.BREAKER_HALF_OPEN_CALLS,
        )
        return replace(base, **overrides)

    def counts_as_failure(self, exc: BaseException) -> bool:
        """True when ``exc`` is evidence that the dependency is unhealthy."""
        return isinstance(exc, self.failure_on) and not isinstance(exc, self.ignore)

    def thresholds(self) -> Thresholds:
        return Thresholds(
            failure_threshold=self.failure_threshold,
            failure_rate_percent=self.failure_rate_percent,
            minimum_calls=self.minimum_calls,
            window_ms=max(10, round(self.window * 1000)),
            open_ms=max(1, round(self.open_for * 1000)),
            half_open_calls=self.half_open_calls,
        )


@dataclass(frozen=True)
class Permit:
    """Permission for one call; hand it back with ``record_success`` or ``record_failure``."""

    generation: int
    trial: bool
    shared: bool  # granted from Redis (True) or from process-local state


class CircuitBreaker:
    """A named breaker. Use ``with breaker.guard():``, ``breaker.call(fn)`` or ``@breaker``."""

    def __init__(self, name: str, policy: BreakerPolicy | None = None, *, redis: SharedRedis | None = None,
                 metric_label: str | None = None) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy.from_settings()
        self._limits = self.policy.thresholds()
        self._redis = redis
        # Metrics may name a group of breakers (the HTTP client's per-host ones share one label per
        # unknown host), so that the number of series stays bounded; state and logs use the name.
        self.metric_label = metric_label or name
        self._gauge = metrics.BREAKER_STATE.labels(self.metric_label)

    @property
    def redis(self) -> SharedRedis:
        return self._redis or shared_redis()

    def allow(self) -> Permit:
        """Return a permit for one call, or raise CircuitOpen."""
        shared = True
        try:
            reply = self.redis.run(ALLOW, [self._key], self._limits.as_args())
            decision = parse_decision(reply)
        except SharedStateUnavailable:
            metrics.DEGRADED_CALLS.labels("breaker").inc()
            shared = False
            decision = _local_state.allow(self.name, self._limits)
        self._observe(decision.state, decision.changed)
        if not decision.allowed:
            metrics.BREAKER_REJECTED.labels(self.metric_label).inc()
            raise CircuitOpen(self.name, retry_after=decision.retry_after_ms / 1000)
        return Permit(decision.generation, decision.state == HALF_OPEN, shared)

    def record_success(self, permit: Permit) -> None:
        """Report that a permitted call succeeded."""
        self._record(permit, ok=True)

    def record_failure(self, permit: Permit) -> None:
        """Report that a permitted call failed in a way that counts against the dependency."""
        self._record(permit, ok=False)

    def state(self) -> str:
        """The state now: closed, open, or half_open (an open circuit whose timeout has passed)."""
        try:
            state, _ = parse_record(self.redis.run(PEEK, [self._key], self._limits.as_args()))
        except SharedStateUnavailable:
            state, _ = _local_state.peek(self.name, self._limits)
        return state

    @contextmanager
    def guard(self) -> Iterator[Permit]:
        """Run the block under a permit; exceptions the policy counts are recorded as failures."""
        permit = self.allow()
        try:
            yield permit
        except BaseException as exc:
            if self.policy.counts_as_failure(exc):
                self.record_failure(permit)
            elif isinstance(exc, Exception):
                self.record_success(permit)  # the dependency answered; the caller's error is its own
            # An interrupted call (SystemExit, KeyboardInterrupt) proves nothing either way.
            raise
        self.record_success(permit)

    def call(self, fn: Callable[P, R], /, *args: P.args, fallback: Callable[[Exception], R] | None = None,
             **kwargs: P.kwargs) -> R:
        """Call ``fn`` through the breaker; ``fallback(exc)`` answers instead when open or on a counted failure."""
        try:
            with self.guard():
                return fn(*args, **kwargs)
        except CircuitOpen as exc:
            if fallback is None:
                raise
            return fallback(exc)
        except Exception as exc:
            if fallback is None or not self.policy.counts_as_failure(exc):
                raise
            return fallback(exc)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` so each call passes through this breaker."""

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            with self.guard():
                return fn(*args, **kwargs)

        return guarded

    @property
    def _key(self) -> str:
        return self.redis.key("breaker", self.name)

    def _record(self, permit: Permit, *, ok: bool) -> None:
        # A permit granted by Redis whose result lands locally is counted without its generation (-1).
        generation = permit.generation
        try:
            if not permit.shared:
                raise SharedStateUnavailable("permit was granted locally")
            reply = self.redis.run(RECORD, [self._key], [*self._limits.as_args(), "ok" if ok else "fail", generation])
            state, changed = parse_record(reply)
        except SharedStateUnavailable:
            if permit.shared:
                metrics.DEGRADED_CALLS.labels("breaker").inc()
                generation = -1
            state, changed = _local_state.record(self.name, self._limits, ok=ok, generation=generation)
        self._observe(state, changed)

    def _observe(self, state: str, changed: str) -> None:
        self._gauge.set(_STATE_VALUE.get(state, 0))
        if not changed:
            return
        before, after = changed.split(">")
        metrics.BREAKER_TRANSITIONS.labels(self.metric_label, before, after).inc()
        log = logger.warning if after == OPEN else logger.info
        log("Circuit %s: %s -> %s", self.name, before, after,
            extra={"breaker": self.name, "from_state": before, "to_state": after})
