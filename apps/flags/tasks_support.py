"""Flag gates for the data plane: ``flag_gated`` for Celery tasks, ``flag_gated_subscriber`` for event subscribers.

A task runs only while its flag is on; otherwise it is skipped or deferred.

Apply it under ``taskplane_task``::

    @taskplane_task(REPORTS_BUILD)
    @flag_gated("reports.nightly", when_off="defer", defer_seconds=300)
    def build(report_id: int) -> None: ...

The flag is evaluated with the task's bound context: the context of the request that caused the
task, carried in the outbox headers (or none for beat-driven tasks). A deferred task is written back
to the outbox with a delay, in its own transaction, so it keeps that context and never becomes a
broker ETA.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from django.db import transaction
from prometheus_client import Counter

from apps.core.task_contract import TASK_QUEUES
from apps.flags.evaluation import get_details

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

GATED_TASKS = Counter(
    "taskplane_flags_gated_tasks_total", "Task runs held back because their flag was off", ["task", "flag", "outcome"]
)
SKIPPED_EVENTS = Counter(
    "taskplane_flags_skipped_events_total", "Events a subscriber skipped because its flag was off",
    ["subscriber", "flag"],
)


def flag_gated(
    key: str,
    *,
    when_off: Literal["skip", "defer"] = "skip",
    defer_seconds: float = 60,
    default: bool = False,
    task_name: str | None = None,
) -> Callable[[F], F]:
    """Run the task only when flag ``key`` is on for its context; else skip it or re-enqueue it later.

    ``default`` is the answer when the flag does not exist (True makes the flag an opt-in kill
    switch). ``task_name`` is what a deferral re-enqueues; inside a worker it defaults to the
    running task's name.
    """
    if when_off not in ("skip", "defer"):
        raise ValueError(f"when_off must be 'skip' or 'defer', not {when_off!r}")
    if isinstance(defer_seconds, bool) or not isinstance(defer_seconds, int | float) or defer_seconds <= 0:
        raise ValueError("defer_seconds must be a positive number of seconds")
    if task_name is not None and task_name not in TASK_QUEUES:
        raise ValueError(f"Task {task_name!r} is not listed in apps.core.task_contract.TASK_QUEUES")

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def gated(*args: Any, **kwargs: Any) -> Any:
            if get_details(key, default).value:
                return function(*args, **kwargs)
            name = task_name or _running_task_name(function)
            if when_off == "skip":
                logger.info("Task %s skipped: flag %s is off for its context", name, key)
                GATED_TASKS.labels(name, key, "skipped").inc()
                return None
            from apps.outbox import enqueue

            with transaction.atomic():
                enqueue(name, args=list(args), kwargs=kwargs, delay=defer_seconds)
            logger.info("Task %s deferred by %ss: flag %s is off for its context", name, defer_seconds, key)
            GATED_TASKS.labels(name, key, "deferred").inc()
            return None

        gated.flag_gate = {"key": key, "when_off": when_off, "defer_seconds": defer_seconds}  # type: ignore[attr-defined]
        return gated  # type: ignore[return-value]

    return decorate


def _running_task_name(function: Callable[..., Any]) -> str:
    from celery import current_task

    name = getattr(current_task, "name", None)
    if not name:
        raise RuntimeError(
            f"{function.__qualname__} is flag-gated outside a Celery task; pass task_name= to flag_gated()"
        )
    return name


def flag_gated_subscriber(key: str, *, subscriber: str, default: bool = True) -> Callable[[F], F]:
    """Run an event subscriber only while flag ``key`` is on for the event's context; else skip, visibly.

    Apply it under ``@subscriber`` and give it the same name::

        @subscriber(ORDER_PLACED, name=RESERVE_STOCK)
        @flag_gated_subscriber("orders.auto-reserve", subscriber=RESERVE_STOCK)
        def reserve_stock(event: dict) -> None: ...

    A skipped event is logged at INFO with its id and counted in
    ``taskplane_flags_skipped_events_total{subscriber, flag}``. Its inbox entry is still recorded (the
    delivery succeeded): once the flag is on again, an operator re-drives the event to the subscriber
    (docs/operations.md). ``default`` is the answer when the flag does not exist (True: a kill switch).
    """

    def decorate(handler: F) -> F:
        @functools.wraps(handler)
        def gated(event: dict[str, Any]) -> Any:
            if get_details(key, default).value:
                return handler(event)
            logger.info("Subscriber %s skipped event %s (%s): flag %s is off for its context; re-drive it "
                        "once the flag is on", subscriber, event.get("id"), event.get("topic"), key,
                        extra={"subscriber": subscriber, "event_id": event.get("id"), "flag": key})
            SKIPPED_EVENTS.labels(subscriber, key).inc()
            return None

        gated.flag_gate = {"key": key, "subscriber": subscriber}  # type: ignore[attr-defined]
        return gated  # type: ignore[return-value]

    return decorate
