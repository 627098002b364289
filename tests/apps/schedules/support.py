"""Helpers of the schedules tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection

from apps.core.audit import Actor
from apps.schedules.firing import schedules_fire_due
from apps.schedules.models import Schedule, ScheduleFire
from tests.apps.schedules.schedule_tasks import EFFECTS_TABLE

ACTOR = Actor(name="tests", via="cli")


def effects_create() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} (id serial PRIMARY KEY, task_id text NOT NULL, "
                       "label text NOT NULL)")


def effects_drop() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {EFFECTS_TABLE}")


def effects_per_fire() -> dict[int, int]:
    """Committed effects by fire id."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT f.id, count(e.id) FROM schedules_schedulefire f JOIN {EFFECTS_TABLE} e "
                       "ON e.task_id = f.task_id GROUP BY f.id")
        return dict(cursor.fetchall())


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def fire_through(schedule: Schedule, *, until: datetime, lag: timedelta = timedelta(milliseconds=200)) -> list:
    """Drive the firing loop with a controlled clock: wake just after each next fire, up to ``until``."""
    while True:
        schedule.refresh_from_db()
        if schedule.next_fire_at is None or schedule.next_fire_at > until:
            break
        schedules_fire_due(now=schedule.next_fire_at + lag)
    return list(ScheduleFire.objects.filter(schedule=schedule).order_by("nominal_at"))
