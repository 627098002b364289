"""Sagas declared in code: ``saga("orders.checkout", steps=[Step(...), ...])`` in an app's ``sagas.py``.

A step's action and compensation are callables (or dotted paths to them) taking a ``StepContext`` and
returning a JSON dict (or None) that is merged into the saga's context. Every app's ``sagas`` module is
imported at start-up (SagasConfig.ready), so web and worker processes know the same definitions.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.utils.module_loading import autodiscover_modules, import_string

from apps.core.resilience.retry import RetryPolicy

DECLARATIONS_MODULE = "sagas"  # apps/<app>/sagas.py
StepFunction = Callable[["StepContext"], Mapping[str, Any] | None]

# Steps retry every error that is not permanent, a few times, with full-jitter backoff (outbox rows with
# a due time, never a sleep in the worker).
DEFAULT_STEP_RETRY = RetryPolicy(max_attempts=3, base_delay=0.5, max_delay=30.0, max_total_delay=3600.0,
                                 retry_on=(Exception,))

_declared: dict[str, SagaDefinition] = {}


@dataclass(frozen=True)
class StepContext:
    """What a step's action or compensation receives."""

    saga_id: str
    saga_name: str
    key: str
    step: str
    attempt: int
    idempotency_key: str  # the same on every attempt of this step's action (its compensation has its own)
    data: dict[str, Any]  # a copy of the saga's context: return what to merge into it


@dataclass(frozen=True)
class Signal:
    """Wait for an outbox event of ``topic`` whose key is ``key(data)`` (default: the saga's key)."""

    topic: str
    timeout_seconds: float
    key: Callable[[dict[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0:
            raise ValueError(f"Signal {self.topic!r}: timeout_seconds must be positive")


@dataclass(frozen=True)
class Step:
    """One step: an action (or a signal wait), an optional compensation, its retry policy and timeouts."""

    name: str
    action: StepFunction | str | None = None
    compensation: StepFunction | str | None = None
    retry: RetryPolicy = DEFAULT_STEP_RETRY
    # Exceptions that are business failures: no retry, the saga compensates (or, past the pivot, cannot fail).
    permanent: tuple[type[BaseException], ...] = ()
    # Temporal's timeouts, in seconds (None: no limit beyond the task's time limit).
    schedule_to_start_seconds: float | None = None  # the step task was not picked up in time
    start_to_close_seconds: float | None = None  # one attempt ran too long
    schedule_to_close_seconds: float | None = None  # all attempts together
    pivot: bool = False  # once it succeeds the saga only moves forward
    signal: Signal | None = None  # wait for an event instead of running an action
    when: Callable[[dict[str, Any]], bool] | None = None  # run the step only when true for the context
    # Run the action in the transaction that records its result: database-only work then happens exactly
    # once. Off (the default) for actions that call other systems: those run outside any transaction.
    in_transaction: bool = False

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 100:
            raise ValueError("A step name must be 1 to 100 characters")
        if (self.action is None) == (self.signal is None):
            raise ValueError(f"Step {self.name!r}: give exactly one of action= or signal=")
        object.__setattr__(self, "permanent", tuple(self.permanent))

    def action_function(self) -> StepFunction:
        """The action as a callable (a dotted path is imported on first use)."""
        return _resolve(self.action)

    def compensation_function(self) -> StepFunction | None:
        """The compensation as a callable, or None when the step has none."""
        return None if self.compensation is None else _resolve(self.compensation)


@dataclass(frozen=True)
class SagaDefinition:
    """A declared saga: its name, ordered steps and optional deadline."""

    name: str
    steps: tuple[Step, ...]
    deadline_seconds: float | None = None
    declared_in: str = field(default="", compare=False)
    # Called with the instance in the transaction that ends it (completed, compensated, cancelled,
    # compensation_failed, or resolved by an operator): the owning app's bookkeeping (an order's status)
    # commits with the saga's end. Database work only; it must not raise.
    on_end: Callable[[Any], None] | None = field(default=None, compare=False)

    @property
    def step_names(self) -> list[str]:
        """The step names, in order (recorded by every instance at start)."""
        return [step.name for step in self.steps]

    @property
    def definition_hash(self) -> str:
        """A hash of the step names: instances record it, and a changed definition shows as a mismatch."""
        return hashlib.sha256("\n".join([self.name, *self.step_names]).encode()).hexdigest()

    def step_named(self, name: str) -> Step | None:
        """The step called ``name`` in this (current) definition, if it still exists."""
        return next((step for step in self.steps if step.name == name), None)


def saga(name: str, *, steps: list[Step] | tuple[Step, ...], deadline_seconds: float | None = None,
         on_end: Callable[[Any], None] | None = None) -> SagaDefinition:
    """Declare a saga (in an app's sagas.py); returns its definition."""
    if not name or len(name) > 200:
        raise ValueError("A saga name must be 1 to 200 characters")
    if not steps:
        raise ValueError(f"Saga {name!r} has no steps")
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"Saga {name!r}: step names must be unique, got {names}")
    if sum(step.pivot for step in steps) > 1:
        raise ValueError(f"Saga {name!r}: at most one step can be the pivot")
    caller = inspect.currentframe().f_back
    definition = SagaDefinition(name=name, steps=tuple(steps), deadline_seconds=deadline_seconds, on_end=on_end,
                                declared_in=caller.f_globals.get("__name__", "") if caller else "")
    existing = _declared.get(name)
    if existing is not None and existing.declared_in != definition.declared_in:
        raise ValueError(f"Saga {name!r} is declared twice ({existing.declared_in} and {definition.declared_in})")
    _declared[name] = definition
    return definition


def saga_definition(name: str) -> SagaDefinition | None:
    """The declared saga called ``name``, if any."""
    return _declared.get(name)


def declared_sagas() -> dict[str, SagaDefinition]:
    """Every declared saga by name."""
    return dict(_declared)


def discover_sagas() -> None:
    """Import every installed app's sagas.py (from SagasConfig.ready)."""
    autodiscover_modules(DECLARATIONS_MODULE)


def _resolve(function: StepFunction | str | None) -> StepFunction:
    if function is None:
        raise ValueError("This step has no such function")
    return import_string(function) if isinstance(function, str) else function
