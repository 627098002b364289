"""The one task decorator every Taskplane task uses, and the platform's one task failure policy.

Failure policy (docs/outbox.md, "Task failures"); nothing a task raises is acknowledged away:

- Infrastructure errors: the broker or Redis cannot be reached, or the database cannot (Django or
  psycopg ``OperationalError``/``InterfaceError`` while the database does not answer). The message
  goes back to the broker (``Reject(requeue=True)``) after a wait that grows while this process keeps
  hitting them (capped by TASK_REQUEUE_DELAY_MAX_SECONDS), so an outage neither loses the message
  nor spins a worker. Such a failure never counts as an attempt.
- Application errors (anything else, and a database error while the database answers: a deadlock,
  a timeout, a dropped connection) retry through the outbox: a new task row whose ``available_at``
  is the outbox backoff away (never a broker countdown), carrying attempt n + 1 in its internal
  context. After ``max_attempts`` the failure is kept as a dead row with the error, shown in admin and
  stats and retryable like any other. If that row cannot be written, the message is requeued.
- Periodic tasks (beat sends the next run) log and drop application errors: no retry rows.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kombu.exceptions
import psycopg
import redis
from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from apps.core.backoff import full_jitter_delay
from apps.core.resilience.retry import retry_after_of
from apps.core.task_contract import QUEUES, TASK_QUEUES
from apps.outbox.delivery import inbox_claim
from apps.outbox.relay import backoff_seconds
from apps.outbox.transports import BrokerUnavailable
from apps.outbox.writing import enqueue_carrying
from workers.app import app
from workers.observability import message_header

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
BROKER_ERRORS = (BrokerUnavailable, kombu.exceptions.OperationalError, redis.ConnectionError, redis.TimeoutError)
# Celery's semi-predicates, raised on purpose: they are control flow, not failures.
_CONTROL = (Ignore, Reject, Retry)
# Retry options that would make Celery retry by itself, with broker countdowns the design forbids.
_CELERY_RETRY_OPTIONS = {"autoretry_for", "retry_backoff", "retry_backoff_max", "retry_jitter", "max_retries",
                         "default_retry_delay", "dont_autoretry_for", "retry_kwargs"}
_EFFECT_NAMESPACE = uuid.UUID("0b7d4f38-1d53-4b33-a4a8-6f2f8b0e5a61")
_requeues_in_a_row = 0  # per process: grows while the infrastructure is down, reset by any other outcome


def taskplane_task(
    name: str,
    *,
    max_attempts: int | None = None,
    periodic: bool = False,
    effect_once: bool = False,
    retry_key: Callable[[Sequence[Any], Mapping[str, Any]], str | None] | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Any]:
    """Register a task under its contract name with acks_late, time limits and the failure policy.

    ``max_attempts`` (default TASK_MAX_ATTEMPTS) bounds runs that end in an application error before
    the message is dead-lettered. ``periodic=True`` is for tasks beat sends: a failed run is logged
    and dropped, the next tick is its retry. ``effect_once=True`` runs the body in one transaction
    with an inbox row (task name, message id) claimed first, so a redelivered message has no second
    effect. ``retry_key(args, kwargs)`` is the ordering key of retry rows (default: the message's key).

    Its queue comes from the contract through ``task_routes`` (Celery routes by name, so a task
    sent by name from anywhere lands on the same queue). Tasks take ids or small JSON and must be
    idempotent: late acknowledgement means a task whose worker died is delivered again.
    """
    if name not in TASK_QUEUES:
        raise ValueError(f"Task {name!r} is not listed in apps.core.task_contract.TASK_QUEUES")
    refused = _CELERY_RETRY_OPTIONS & set(options)
    if refused:
        raise ValueError(f"Task {name!r}: {sorted(refused)} would retry through broker countdowns; "
                         "failed tasks retry through the outbox (max_attempts=)")
    attempts = settings.TASK_MAX_ATTEMPTS if max_attempts is None else max_attempts
    if attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    task_options = {
        "name": name,
        "base": TaskplaneTask,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "acks_on_failure_or_timeout": False,
        "soft_time_limit": app.conf.task_soft_time_limit,
        "time_limit": app.conf.task_time_limit,
        "ignore_result": True,
        "max_attempts": attempts,
        "periodic": periodic,
        "effect_once": effect_once,
        "retry_key": staticmethod(retry_key) if retry_key else None,
        **options,
    }
    return app.task(**task_options)


class TaskplaneTask(Task):
    """The Celery task class of every Taskplane task: a worker runs its body under the failure policy."""

    max_attempts = 1
    periodic = False
    effect_once = False
    retry_key: Callable[[Sequence[Any], Mapping[str, Any]], str | None] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:  # a plain function call: no message to retry or redeliver
            return super().__call__(*args, **kwargs)
        return _run_under_policy(self, args, kwargs)


@dataclass
class Received:
    """What the failure policy needs from the message being run."""

    task_id: str
    headers: dict[str, Any]  # public headers (the relay's ``taskplane`` header)
    context: dict[str, Any]  # internal context: carriers, and on retry rows "attempt" and "origin"
    key: str | None
    encrypted: bool
    queue: str | None
    attempt: int = field(init=False)
    origin: str = field(init=False)

    def __post_init__(self) -> None:
        attempt = self.context.get("attempt")
        self.attempt = attempt if isinstance(attempt, int) and attempt > 0 else 1
        self.origin = str(self.context.get("origin") or self.task_id)

    @classmethod
    def of(cls, task: Task) -> Received:
        """Read the Taskplane headers of the running message (messages sent by beat have none)."""
        request = task.request
        internal = message_header(request, "taskplane_internal")
        context = internal.get("context")
        routing_key = (request.delivery_info or {}).get("routing_key")
        return cls(task_id=str(request.id), headers=dict(message_header(request, "taskplane")),
                   context=dict(context) if isinstance(context, dict) else {}, key=internal.get("key"),
                   encrypted=internal.get("encrypted") is True, queue=routing_key if routing_key in QUEUES else None)


def _run_under_policy(task: TaskplaneTask, args: tuple, kwargs: dict) -> Any:
    global _requeues_in_a_row
    received = Received.of(task)
    try:
        result = _run_body(task, received, args, kwargs)
    except _CONTROL:
        raise
    except Exception as exc:
        _on_failure(task, received, args, kwargs, exc)  # always raises Ignore or Reject
        raise  # unreachable; keeps type checkers honest
    _requeues_in_a_row = 0
    return result


def _run_body(task: TaskplaneTask, received: Received, args: tuple, kwargs: dict) -> Any:
    if not task.effect_once:
        return task.run(*args, **kwargs)
    with transaction.atomic():
        # One logical message keeps one id across its retry rows ("origin"), so a redelivered original
        # and its retry cannot both have an effect.
        if not inbox_claim(consumer=task.name, message_id=_effect_id(received.origin)):
            logger.info("Task %s[%s] skipped: message %s already had its effect", task.name, received.task_id,
                        received.origin)
            _set_outcome(task, "duplicate")
            return "duplicate"
        return task.run(*args, **kwargs)


def _effect_id(origin: str) -> str:
    try:
        return str(uuid.UUID(origin))
    except ValueError:  # an id Celery did not generate (send_task(task_id="...")): still one stable UUID
        return str(uuid.uuid5(_EFFECT_NAMESPACE, origin))


def _on_failure(task: TaskplaneTask, received: Received, args: tuple, kwargs: dict, exc: Exception) -> None:
    if isinstance(exc, BROKER_ERRORS):
        _requeue(task, received, exc)
    if task.periodic:
        if isinstance(exc, DATABASE_ERRORS) and not _database_answers():
            _requeue(task, received, exc)
        logger.error("Periodic task %s[%s] failed; beat sends the next run: %s", task.name, received.task_id,
                     _error_text(exc, received), exc_info=exc)
        _set_outcome(task, "dropped")
        raise Ignore()
    try:
        outcome, row = _write_follow_up(task, received, args, kwargs, exc)
    except Exception as write_error:  # the database cannot take the row: the broker keeps the message
        _requeue(task, received, exc, write_error=write_error)
    if outcome == "dead":
        logger.error("Task %s[%s] failed on its last attempt (%d of %d); dead-lettered as outbox message #%s: %s",
                     task.name, received.task_id, received.attempt, task.max_attempts, row.pk,
                     _error_text(exc, received), exc_info=exc)
    else:
        logger.warning("Task %s[%s] failed on attempt %d of %d; retried as outbox message #%s: %s",
                       task.name, received.task_id, received.attempt, task.max_attempts, row.pk,
                       _error_text(exc, received), exc_info=exc)
    _set_outcome(task, outcome)
    raise Ignore()


def _write_follow_up(task: TaskplaneTask, received: Received, args: tuple, kwargs: dict,
                     exc: Exception) -> tuple[str, Any]:
    """The retry row (or the dead row after the last attempt), in its own transaction."""
    _replace_broken_connection()
    context = {**received.context, "origin": received.origin}
    common = {
        "task_name": task.name, "args": list(args), "kwargs": dict(kwargs),
        "key": task.retry_key(args, kwargs) if task.retry_key else received.key, "queue": received.queue,
        "headers": received.headers, "encrypt": received.encrypted,
        # One follow-up per failed message: a redelivery of it that fails again finds this row.
        "dedup_key": f"taskplane.follow-up:{received.task_id}", "error": _error_text(exc, received),
    }
    with transaction.atomic():
        if received.attempt >= task.max_attempts:
            context.pop("attempt", None)  # retried by an operator, it starts again at attempt 1
            return "dead", enqueue_carrying(**common, context=context, dead=True, attempts=received.attempt)
        delay = max(backoff_seconds(received.attempt), retry_after_of(exc))
        return "retry", enqueue_carrying(**common, context={**context, "attempt": received.attempt + 1},
                                             delay_seconds=delay)


def _requeue(task: TaskplaneTask, received: Received, exc: Exception, *, write_error: Exception | None = None) -> None:
    """Hand the message back to the broker after a bounded wait; raises Reject."""
    global _requeues_in_a_row
    wait = full_jitter_delay(_requeues_in_a_row, base=0.5, cap=settings.TASK_REQUEUE_DELAY_MAX_SECONDS)
    _requeues_in_a_row += 1
    because = f" (and the outbox could not take its retry: {type(write_error).__name__}: {write_error})" \
        if write_error is not None else ""
    logger.warning("Task %s[%s] hit an infrastructure error%s; back to the broker in %.1fs: %s", task.name,
                   received.task_id, because, wait, _error_text(exc, received))
    _set_outcome(task, "requeued")
    time.sleep(wait)  # the database or broker is down for every task of this process, not just this one
    raise Reject(exc, requeue=True)


def _database_answers() -> bool:
    _replace_broken_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except (DatabaseError, psycopg.Error):
        return False
    return True


def _replace_broken_connection() -> None:
    # After an OperationalError Django keeps the dead connection until asked; outside a transaction
    # it is dropped here and the next query opens a new one.
    if not connection.in_atomic_block:
        try:
            connection.close_if_unusable_or_obsolete()
        except (DatabaseError, psycopg.Error):
            logger.debug("closing a broken database connection failed", exc_info=True)


def _error_text(exc: Exception, received: Received) -> str:
    if received.encrypted:  # an error message may quote the payload, which must not be stored in plaintext
        return f"{type(exc).__name__} (message withheld: the payload is encrypted; see the worker log)"
    return f"{type(exc).__name__}: {exc}"


def _set_outcome(task: Task, outcome: str) -> None:
    task.request.taskplane_outcome = outcome  # the metrics label of this run (workers/observability.py)
