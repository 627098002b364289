"""Worker signals that record a schedule fire's state: running when its task starts, then how it ended.

A fire's task is an ordinary contract task; the fire it stands for rides its message's internal
context (apps/schedules/fire_context.py), retry rows included. These handlers read it there and
map the failure policy's outcome (workers/task.py) to the fire's state, so the task body and the
failure policy stay unaware of schedules.
"""

from __future__ import annotations

import logging

from celery import Celery, signals
from django.db import DatabaseError

from apps.schedules.fire_context import fire_id_of
from workers.observability import message_header

logger = logging.getLogger(__name__)
# The failure policy's outcomes (workers/task.py) as fire states (apps/schedules/models.py); "requeued"
# leaves the fire running (the broker redelivers it), anything else unnamed here is a failure.
_OUTCOME_STATES = {"success": "succeeded", "duplicate": "succeeded", "retry": "enqueued",
                   "dead": "failed", "dropped": "failed"}


def _fire_of(task) -> int | None:
    if task is None:
        return None
    return fire_id_of(message_header(task.request, "taskplane_internal").get("context"))


def _on_prerun(task_id=None, task=None, **kwargs) -> None:
    fire_id = _fire_of(task)
    if fire_id is None:
        return
    from apps.schedules.services import fire_started  # models load after Django is set up

    try:
        fire_started(fire_id=fire_id, task_id=str(task_id))
    except DatabaseError as exc:  # the task itself decides what a down database means
        logger.warning("Schedule fire %s: could not record its start: %s", fire_id, exc)


def _on_postrun(task_id=None, task=None, state=None, **kwargs) -> None:
    fire_id = _fire_of(task)
    if fire_id is None:
        return
    outcome = getattr(task.request, "taskplane_outcome", None) or (state or "").lower()
    fire_state = _OUTCOME_STATES.get(outcome, None if outcome == "requeued" else "failed")
    if fire_state is None:
        return
    error = "" if fire_state == "succeeded" else f"task outcome: {outcome}"
    from apps.schedules.services import fire_finished

    try:
        fire_finished(fire_id=fire_id, state=fire_state, error=error)
    except DatabaseError as exc:
        logger.warning("Schedule fire %s: could not record its end (%s): %s", fire_id, fire_state, exc)


def connect(app: Celery) -> None:
    """Attach the fire-state handlers for processes started from this app."""
    signals.task_prerun.connect(_on_prerun, weak=False)
    signals.task_postrun.connect(_on_postrun, weak=False)
