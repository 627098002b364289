"""Tasks that exist only for the schedules tests: they record which fire ran, in an effects table.

Real workers load them with ``--include tests.apps.schedules.schedule_tasks``; beat processes get
them through ``tests.apps.schedules.beat_settings``. Their names join the task contract here, in test
processes only, so that schedules and the outbox accept them.
"""

from __future__ import annotations

import time

from celery import current_task
from django.db import connection

from apps.core.task_contract import TASK_QUEUES

RECORD = "tests.schedules.record"
SLOW = "tests.schedules.slow"
FAILS = "tests.schedules.fails"
for _name in (RECORD, SLOW, FAILS):
    TASK_QUEUES.setdefault(_name, "default")

EFFECTS_TABLE = "test_schedule_effects"

from workers.task import taskplane_task  # noqa: E402  (after the contract knows the names)


def _record_effect(label: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {EFFECTS_TABLE} (task_id, label) VALUES (%s, %s)",
                       [str(current_task.request.id), label])


@taskplane_task(RECORD, effect_once=True)
def record(label: str = "") -> None:
    """One committed effect row per fire (the inbox makes a redelivered message a no-op)."""
    _record_effect(label)


@taskplane_task(SLOW, effect_once=True)
def slow(seconds: float = 2.0, label: str = "") -> None:
    """Slower than its schedule's interval: the overlap policy decides what the next occurrences do."""
    time.sleep(seconds)
    _record_effect(label)


@taskplane_task(FAILS, max_attempts=1)
def fails() -> None:
    """Fails with an application error (one attempt, then dead)."""
    raise ValueError("injected schedule task failure")
