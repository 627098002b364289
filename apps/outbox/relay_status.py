"""Each relay slot's durable status: last successful cycle, last error (time, count), unroutable events.

The serving loop reports every cycle here. Writes are coalesced: at most one small UPDATE per
``WRITE_INTERVAL`` while nothing changes, and one at once when the slot starts failing, fails
differently or recovers, so stats, admin and /health/ see a failure within one cycle while a busy
relay pays one autocommitted UPDATE a second (SQLite has a single writer: its write transactions
stay few and short). Times come from the database clock, like everything the relay compares.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import Counter

from django.db import DatabaseError, IntegrityError
from django.db.models import F
from django.db.models.functions import Now

from apps.outbox.models import RelayStatus

logger = logging.getLogger(__name__)

WRITE_INTERVAL = 1.0
_MAX_ERROR_CHARS = 2000
_MAX_DISTINCT_ERRORS = 100  # per run of failures; bounds memory if every error text differs


def relay_holder() -> str:
    """Who serves a slot, as operators read it: host and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def error_text(exc: BaseException) -> str:
    """An exception as stored and compared: its type and message."""
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]


def relay_status_text(relay: dict) -> str:
    """One relay slot (as ``relay_statuses()`` returns it) in words: state, last success, last error."""

    def ago(seconds: float | None) -> str:
        return "never" if seconds is None else f"{seconds:.1f} s ago"

    text = f"{relay['state']}, last success {ago(relay['last_success_age_seconds'])}"
    if relay["last_error_at"] is not None:
        text += (f"; last error {ago(relay['last_error_age_seconds'])} ({relay['error_count']} failed cycle(s) "
                 f"in a row): {relay['last_error'][:200]}")
    return text


class RelayStatusRecorder:
    """Keeps one slot's RelayStatus row current for the process that holds the slot."""

    def __init__(self, *, slot: int, holder: str | None = None) -> None:
        self.slot = slot
        self.holder = holder or relay_holder()
        self.error: str | None = None  # the current error; None while cycles succeed
        self.error_count = 0  # failed cycles in the current (or last) run of failures
        self._seen: set[str] = set()  # distinct errors of the current run, each logged once
        self._unroutable: Counter = Counter()  # events that reached no queue, not written yet
        self._dirty = False
        self._written_at = -math.inf

    def start(self) -> None:
        """Take the slot's row over: holder and start time (the last error stays visible until a success)."""
        self._write({"holder": self.holder, "started_at": Now()})

    def cycle_succeeded(self, *, unroutable: Counter | None = None) -> int | None:
        """Record a successful cycle; returns the number of failed cycles it ends, if it ends a run of them."""
        if unroutable:
            self._unroutable.update(unroutable)
        if self.error is None:
            self._dirty = True
            if time.monotonic() - self._written_at >= WRITE_INTERVAL:
                self.flush()
            return None
        self.error = None
        self._seen.clear()
        self._dirty = True
        self.flush()  # recovered: say so at once
        return self.error_count

    def cycle_failed(self, exc: BaseException) -> bool:
        """Record a failed cycle; True when this error is new in the current run (log it, with its traceback)."""
        text = error_text(exc)
        if self.error is None:
            self.error_count = 0
        self.error_count += 1
        new = text not in self._seen and len(self._seen) < _MAX_DISTINCT_ERRORS
        if new:
            self._seen.add(text)
        changed = text != self.error
        self.error = text
        self._dirty = True
        if changed or time.monotonic() - self._written_at >= WRITE_INTERVAL:
            self.flush()
        return new

    def flush(self) -> None:
        """Write what changed since the last write (a lease ends with one)."""
        if not self._dirty:
            return
        fields: dict = {"updated_at": Now()}
        if self.error is None:
            # error_count too: repeats of the same error within WRITE_INTERVAL were only counted in memory.
            fields.update(last_success_at=Now(), error_count=self.error_count)
        else:
            fields.update(last_error=self.error, last_error_at=Now(), error_count=self.error_count)
        if self._unroutable:
            fields["unroutable_events"] = F("unroutable_events") + sum(self._unroutable.values())
            fields["last_unroutable_topic"] = next(reversed(self._unroutable))[:200]
        self._write(fields)

    def _write(self, fields: dict) -> None:
        try:
            if not RelayStatus.objects.filter(slot=self.slot).update(**fields):
                try:
                    RelayStatus.objects.create(slot=self.slot, holder=self.holder)
                except IntegrityError:
                    pass  # another process created it first; the update below applies either way
                RelayStatus.objects.filter(slot=self.slot).update(**fields)
        except DatabaseError as exc:
            # The database is down or locked (often the very error being recorded): keep it, write it next time.
            logger.debug("Relay status of slot %s not written: %s", self.slot, exc)
            self._dirty = True
            return
        self._dirty = False
        self._unroutable.clear()
        self._written_at = time.monotonic()
