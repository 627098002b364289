"""Which schedule fire the task message being written stands for (bound only while a fire is enqueued)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_fire_id: ContextVar[int | None] = ContextVar("taskplane_schedule_fire", default=None)


def capture_fire() -> int | None:
    """The carrier's capture: the fire id bound by ``enqueuing_fire``, if any."""
    return _fire_id.get()


def restore_fire(value: object) -> None:
    """The carrier's restore: never bound in a worker, so work a fired task causes is not that fire."""
    _fire_id.set(None)


@contextmanager
def enqueuing_fire(fire_id: int) -> Iterator[None]:
    """Bind ``fire_id`` while the fire's task row is written."""
    token = _fire_id.set(fire_id)
    try:
        yield
    finally:
        _fire_id.reset(token)


def fire_id_of(context: object) -> int | None:
    """The fire id in a message's internal context (``{"carriers": {"schedules.fire": id}}``), or None."""
    carriers = context.get("carriers") if isinstance(context, dict) else None
    value = carriers.get("schedules.fire") if isinstance(carriers, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
