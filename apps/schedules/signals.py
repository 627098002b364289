"""The change signal: every committed create, edit, pause, resume, delete or trigger wakes the firing loops.

On PostgreSQL it is a NOTIFY on ``CHANNEL``, delivered at commit (and dropped with a rollback); every
beat LISTENs on its own connection. Other databases have no signal: the loop wakes every
SCHEDULES_MAX_SLEEP_MS.
"""

from __future__ import annotations

from django.db import connection

CHANNEL = "taskplane_schedules"


def schedules_changed() -> None:
    """Queue the change signal in the current transaction (sent at its commit)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
