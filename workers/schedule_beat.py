"""The beat scheduler class that fires database schedules: ``celery -A workers beat`` uses it (CELERY_BEAT_SCHEDULER).

Each tick sends the static entries of workers/beat.py (Celery's own PersistentScheduler does that),
then runs one claim-fire-advance transaction (apps/schedules/firing.py) and sleeps until the
earliest next fire, a static entry, or a change signal, whichever comes first. The signal is a
PostgreSQL NOTIFY (apps/schedules/signals.py) this process LISTENs for on its own connection, so a
created, edited or paused schedule is seen at once. Any number of beats may run: the claim skips
rows another beat holds, and a fire row is unique per (schedule, nominal time).
"""

from __future__ import annotations

import logging
import time

import psycopg
from celery.beat import PersistentScheduler
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection

from apps.core.backoff import full_jitter_delay
from apps.schedules.firing import schedules_fire_due, seconds_until_next_due
from apps.schedules.signals import CHANNEL

logger = logging.getLogger(__name__)
# Another beat holds the due rows (its transaction is committing): look again shortly, without spinning.
_BUSY_PAUSE_SECONDS = 0.02


class ChangeListener:
    """LISTENs for the schedules' change signal on a connection of its own (PostgreSQL only)."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection | None = None

    def wait(self, timeout: float) -> None:
        """Return after ``timeout`` seconds or at the first change signal."""
        if timeout <= 0:
            return
        if connection.vendor != "postgresql":
            time.sleep(timeout)
            return
        try:
            if self.conn is None or self.conn.closed:
                params = connection.get_connection_params()
                params.pop("cursor_factory", None)
                params.pop("context", None)
                self.conn = psycopg.connect(**params, autocommit=True)
                self.conn.execute(f"LISTEN {CHANNEL}")
                return  # changes made before LISTEN took effect: look at the table once more first
            for _ in self.conn.notifies(timeout=timeout, stop_after=1):
                break
            for _ in self.conn.notifies(timeout=0.0):  # several changes at once wake us once
                pass
        except (psycopg.Error, OSError) as exc:
            logger.warning("Schedules change listener lost its connection (%s); sleeping instead", exc)
            self.close()
            time.sleep(min(timeout, 1.0))

    def close(self) -> None:
        """Drop the listening connection."""
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None


class DatabaseFiringScheduler(PersistentScheduler):
    """PersistentScheduler for the static entries, plus the database schedules' firing loop."""

    def __init__(self, *args, **kwargs) -> None:
        self.listener = ChangeListener()
        self.failures = 0
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs) -> float:
        """Send due static entries, fire due schedules, then wait; returns 0 (the wait happened here)."""
        static_wait = super().tick(*args, **kwargs)
        try:
            report = schedules_fire_due()
            until = seconds_until_next_due()
        except (DatabaseError, InterfaceError, OperationalError, psycopg.Error) as exc:
            self.failures += 1
            wait = full_jitter_delay(self.failures, base=0.2, cap=settings.SCHEDULES_MAX_SLEEP_SECONDS)
            logger.warning("Schedules firing loop: database error (%s: %s); next try in %.1fs",
                           type(exc).__name__, exc, wait)
            _drop_broken_connection()
            time.sleep(max(0.0, min(wait, static_wait) if static_wait else wait))
            return 0
        self.failures = 0
        if report.schedules >= settings.SCHEDULES_BATCH_SIZE:
            return 0  # a full batch: more are due now
        wait = settings.SCHEDULES_MAX_SLEEP_SECONDS if until is None else max(until, 0.0)
        if until is not None and until <= 0 and report.schedules == 0:
            wait = _BUSY_PAUSE_SECONDS
        if static_wait:
            wait = max(0.0, min(wait, static_wait))
        self.listener.wait(min(wait, settings.SCHEDULES_MAX_SLEEP_SECONDS))
        return 0

    def close(self) -> None:
        self.listener.close()
        super().close()


def _drop_broken_connection() -> None:
    try:
        connection.close_if_unusable_or_obsolete()
    except (DatabaseError, psycopg.Error):
        connection.close()
