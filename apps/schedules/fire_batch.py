"""The fires one transaction decides, written together: one multi-row INSERT and one enqueue_many.

A claim holds up to SCHEDULES_BATCH_SIZE schedules; writing each fire row and its task row on its
own cost two round trips per fire. The firing loop records its decisions here and writes them once,
at the end of its transaction: the new fire rows in one statement (``ON CONFLICT DO NOTHING`` on
``(schedule, nominal_at)``), the task rows of every enqueued fire in one ``enqueue_many``.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection

from apps.outbox.writing import Dispatch, enqueue_many
from apps.schedules import metrics
from apps.schedules.fire_context import fire_carriers
from apps.schedules.models import Schedule, ScheduleFire

State = ScheduleFire.State
_TABLE = ScheduleFire._meta.db_table
_COLUMNS = "schedule_id, nominal_at, decision, state, decided_at, fired_at, task_id, error"
_INSERT_MANY = (  # PostgreSQL: the whole batch in one statement, its columns as arrays
    f"INSERT INTO {_TABLE} ({_COLUMNS}) "  # noqa: S608
    "SELECT r.schedule_id, r.nominal_at, r.decision, r.state, %s, CASE WHEN r.task_id <> '' THEN %s END, "
    "r.task_id, '' FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[]) "
    "AS r(schedule_id, nominal_at, decision, state, task_id) "
    "ON CONFLICT (schedule_id, nominal_at) DO NOTHING RETURNING id, schedule_id, nominal_at"
)
_INSERT_ONE = (  # SQLite (in process, no round trips): row by row
    f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, '') "  # noqa: S608
    "ON CONFLICT (schedule_id, nominal_at) DO NOTHING RETURNING id"
)


@dataclass
class NewFire:
    """An occurrence decided in this transaction; ``fire_id`` is set once its row is written."""

    schedule: Schedule
    nominal_at: datetime
    decision: str
    state: str
    task_id: uuid.UUID | None  # chosen before the INSERT, so the row is written with it, not updated after
    fire_id: int | None = None


@dataclass
class FireBatch:
    """Decisions of one transaction, written by ``write()``; ``now`` is the database time of the claim."""

    now: datetime
    new: list[NewFire] = field(default_factory=list)
    released: list[tuple[Schedule, ScheduleFire]] = field(default_factory=list)

    def record(self, schedule: Schedule, *, nominal_at: datetime, decision: str, state: str) -> None:
        """A new fire row; an enqueued one also gets its task row."""
        task_id = uuid.uuid4() if state == State.ENQUEUED else None
        self.new.append(NewFire(schedule, nominal_at, decision, state, task_id))

    def release(self, schedule: Schedule, fire: ScheduleFire) -> None:
        """An existing (buffered, or re-decided missed) fire becomes enqueued, with its task row."""
        fire.state, fire.fired_at, fire.task_id = State.ENQUEUED, self.now, str(uuid.uuid4())
        self.released.append((schedule, fire))

    def write(self) -> list[NewFire]:
        """Write everything recorded; returns the new fires whose rows were inserted (a duplicate is not)."""
        inserted = _insert(self.new, self.now)
        if self.released:
            ScheduleFire.objects.bulk_update([fire for _, fire in self.released], ["state", "fired_at", "task_id"])
        dispatches = [_dispatch(fire.schedule, fire.fire_id, fire.nominal_at, fire.task_id)
                      for fire in inserted if fire.state == State.ENQUEUED]
        dispatches += [_dispatch(schedule, fire.pk, fire.nominal_at, uuid.UUID(fire.task_id))
                       for schedule, fire in self.released]
        if dispatches:
            enqueue_many(dispatches)
        for fire in inserted:
            metrics.FIRES.labels(fire.schedule.name, fire.state).inc()
        for dispatch_at in [f.nominal_at for f in inserted if f.state == State.ENQUEUED] + [
                fire.nominal_at for _, fire in self.released]:
            metrics.LATENESS.observe(max(0.0, (self.now - dispatch_at).total_seconds()))
        self.new, self.released = [], []
        return inserted


def _dispatch(schedule: Schedule, fire_id: int, nominal_at: datetime, task_id: uuid.UUID) -> Dispatch:
    # No dedup key: the fire row is unique and commits with this row, so there is never a second.
    return Dispatch(schedule.task, schedule.args, schedule.kwargs, key=schedule.ordering_key,
                    delay=jitter_seconds(schedule, nominal_at), message_id=task_id, carriers=fire_carriers(fire_id))


def jitter_seconds(schedule: Schedule, nominal_at: datetime) -> float:
    """The fire's delay within the schedule's jitter, stable per occurrence (a retried claim picks the same)."""
    if not schedule.jitter_seconds:
        return 0.0
    seed = zlib.crc32(f"{schedule.pk}:{nominal_at.isoformat()}".encode())
    return (seed % (schedule.jitter_seconds * 1000)) / 1000


def _insert(fires: list[NewFire], now: datetime) -> list[NewFire]:
    """Insert the fire rows, skipping occurrences that already have one; sets and returns the inserted."""
    if not fires:
        return []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_INSERT_MANY, [
                now, now, [f.schedule.pk for f in fires], [f.nominal_at for f in fires],
                [f.decision for f in fires], [f.state for f in fires], [str(f.task_id or "") for f in fires],
            ])
            ids = {(schedule_id, nominal_at): pk for pk, schedule_id, nominal_at in cursor.fetchall()}
            for fire in fires:
                fire.fire_id = ids.get((fire.schedule.pk, fire.nominal_at))
        else:
            for fire in fires:
                cursor.execute(_INSERT_ONE, [fire.schedule.pk, fire.nominal_at, fire.decision, fire.state, now,
                                             now if fire.task_id else None, str(fire.task_id or "")])
                row = cursor.fetchone()
                fire.fire_id = row[0] if row else None
    return [fire for fire in fires if fire.fire_id is not None]

