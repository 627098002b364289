"""Which schedule fire a task message stands for: a value in the message's internal context.

The firing loop writes it into each fire's task row (``Dispatch(carriers=...)``), the task failure
policy copies it to retry rows, and the worker reads it back to record the fire's state. It rides
only Taskplane's own task messages, never an outside consumer's envelope.
"""

from __future__ import annotations

FIRE_CARRIER = "schedules.fire"


def fire_carriers(fire_id: int) -> dict[str, int]:
    """The carrier values that tie a task row to fire ``fire_id``."""
    return {FIRE_CARRIER: fire_id}


def fire_id_of(context: object) -> int | None:
    """The fire id in a message's internal context (``{"carriers": {"schedules.fire": id}}``), or None."""
    carriers = context.get("carriers") if isinstance(context, dict) else None
    value = carriers.get(FIRE_CARRIER) if isinstance(carriers, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
