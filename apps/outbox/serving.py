"""Running the relay as a long-lived loop: a slot lock, wake-ups after commit, a bounded lease, a status row.

A relay holds one of OUTBOX_RELAYS slots for at most OUTBOX_RELAY_LEASE_SECONDS, then hands over
(the Celery task sends its successor to the broker directly: it is the relay's own continuation), so
a worker's warm shutdown never waits long for it. On PostgreSQL the slot is a session advisory lock
on the relay's listening connection: if the relay process dies, PostgreSQL drops the lock with the
connection and the next beat tick starts a replacement. On SQLite (the embedded default, one
machine) it is an exclusive file lock.

A cycle that fails, whatever it raised, is recorded in the slot's status row (apps/outbox/relay_status.py),
logged once per distinct error, backed off and retried; it never ends the lease.
"""

from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection

from apps.core.backoff import full_jitter_delay
from apps.outbox import metrics
from apps.outbox.relay import relay_once
from apps.outbox.relay_status import RelayStatusRecorder, error_text
from apps.outbox.transports import BrokerUnavailable, Transport, open_transport
from apps.outbox.writing import NOTIFY_CHANNEL

logger = logging.getLogger(__name__)
_LOCK_NAMESPACE = 0x7470_6F62  # "tpob": advisory lock ids of relay slots are (namespace, slot)
# Waits between failed cycles (or slot attempts): full jitter, from up to 0.2 s to up to 5 s.
_PAUSE_BASE_SECONDS = 0.2
_PAUSE_MAX_SECONDS = 5.0


class PostgresWaker:
    """LISTENs for the writers' NOTIFY and holds the relay slot's advisory lock on the same connection."""

    def __init__(self) -> None:
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        self.conn = psycopg.connect(**params, autocommit=True)
        self.slot: int | None = None

    def acquire_slot(self) -> int | None:
        for slot in range(settings.OUTBOX_RELAYS):
            row = self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_NAMESPACE, slot]).fetchone()
            if row and row[0]:
                self.slot = slot
                self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                return slot
        return None

    def wait(self, timeout: float) -> None:
        for _ in self.conn.notifies(timeout=timeout, stop_after=1):
            break

    def close(self) -> None:
        self.conn.close()  # releases the advisory lock too


class FileWaker:
    """SQLite: an exclusive file lock per slot and plain polling (the relay is on the same machine)."""

    def __init__(self) -> None:
        self.handle = None
        self.slot: int | None = None

    def acquire_slot(self) -> int | None:
        folder = Path(settings.VAR_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        for slot in range(settings.OUTBOX_RELAYS):
            handle = open(folder / f"outbox-relay-{slot}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self.handle, self.slot = handle, slot
            return slot
        return None

    def wait(self, timeout: float) -> None:
        time.sleep(min(timeout, settings.OUTBOX_SQLITE_POLL_SECONDS))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class _SlotLost(Exception):
    """The slot's connection failed: its lock is gone with it (another relay may hold the slot now)."""


def relay_serve(*, lease_seconds: float | None = None) -> str:
    """Relay until the lease ends: "lease-ended", "busy" (every slot is taken) or "database-unavailable".

    While the database is unreachable it keeps trying until the lease ends and then answers
    "database-unavailable" (never having held a slot), so the task's successor chain, and with it a
    worker running without beat, outlives a database restart.
    """
    lease = settings.OUTBOX_RELAY_LEASE_SECONDS if lease_seconds is None else lease_seconds
    deadline = time.monotonic() + lease
    failures = 0
    served = False
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            waker = PostgresWaker() if connection.vendor == "postgresql" else FileWaker()
        except (DatabaseError, psycopg.Error) as exc:
            failures += 1
            _log_slot_error(exc, failures)
            time.sleep(min(_pause(failures), remaining))
            continue
        try:
            slot = waker.acquire_slot()
            if slot is None:
                return "busy"
            logger.info("Outbox relay serving slot %s for %.0fs", slot, remaining)
            failures, served = 0, True
            _serve(waker, RelayStatusRecorder(slot=slot), deadline=deadline)
            return "lease-ended"
        except (_SlotLost, DatabaseError, psycopg.Error) as exc:
            failures += 1
            _log_slot_error(exc, failures)
            time.sleep(min(_pause(failures), max(0.0, deadline - time.monotonic())))
        finally:
            waker.close()
    return "lease-ended" if served else "database-unavailable"


def _log_slot_error(exc: BaseException, failures: int) -> None:
    # Once per run of failures: a database down for minutes must not log a line per attempt.
    if failures == 1:
        logger.warning("Outbox relay cannot hold a slot, retrying until its lease ends: %s", error_text(exc))


def _serve(waker, recorder: RelayStatusRecorder, *, deadline: float) -> None:
    transport: Transport | None = None
    pause = 0.0  # while cycles fail: the one backoff of the platform, growing with each failure
    recheck = 0.0  # grows while only rows held back for ordering are found
    recorder.start()
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if pause:
                time.sleep(min(pause, remaining))
            try:
                transport = transport or open_transport()
                result = relay_once(transport)
            except Exception as exc:  # any failure of a cycle is recorded, backed off and retried
                transport = _after_failure(exc, transport)
                first = recorder.cycle_failed(exc)
                pause = _pause(recorder.error_count)
                _log_cycle_error(exc, recorder, pause, first=first)
                continue
            ended = recorder.cycle_succeeded(unroutable=result.unroutable)
            if ended:
                logger.info("Outbox relay slot %s recovered after %s failed cycle(s)", recorder.slot, ended)
            pause = 0.0
            remaining = max(0.0, deadline - time.monotonic())
            if result.locked >= settings.OUTBOX_BATCH_SIZE and result.published:
                recheck = 0.0
                continue  # a full batch: there is more
            if result.held_back:
                # Rows wait on another relay's batch (released within milliseconds) or on a retry's
                # backoff (much longer): look again soon, then less and less often.
                recheck = 0.002 if result.published else min(settings.OUTBOX_POLL_SECONDS, max(0.002, recheck * 2))
                _wait(waker, min(recheck, remaining))
                continue
            recheck = 0.0
            _wait(waker, min(settings.OUTBOX_POLL_SECONDS, remaining))
    except _SlotLost as exc:
        recorder.cycle_failed(exc)
        raise
    finally:
        recorder.flush()
        _close(transport)


def _after_failure(exc: Exception, transport: Transport | None) -> Transport | None:
    """Drop what the failure may have broken; returns the transport to keep (None: reopen next cycle)."""
    if isinstance(exc, BrokerUnavailable):
        metrics.BROKER_UNAVAILABLE.inc()
    metrics.RELAY_ERRORS.labels(type(exc).__name__).inc()
    if isinstance(exc, DatabaseError):
        connection.close()
        return transport
    connection.close_if_unusable_or_obsolete()
    _close(transport)
    return None


def _log_cycle_error(exc: Exception, recorder: RelayStatusRecorder, pause: float, *, first: bool) -> None:
    # Once per distinct error in a run of failures, with its traceback: the status row counts the rest.
    if not first:
        return
    expected = isinstance(exc, (BrokerUnavailable, DatabaseError))
    logger.log(logging.WARNING if expected else logging.ERROR,
               "Outbox relay slot %s: cycle failed (%s so far in this run), retrying in %.1fs: %s",
               recorder.slot, recorder.error_count, pause, error_text(exc), exc_info=exc)


def _wait(waker, timeout: float) -> None:
    try:
        waker.wait(timeout)
    except (psycopg.Error, OSError) as exc:  # the listening connection, and the slot lock with it, is gone
        raise _SlotLost(error_text(exc)) from exc


def _pause(failures: int) -> float:
    return full_jitter_delay(failures - 1, base=_PAUSE_BASE_SECONDS, cap=_PAUSE_MAX_SECONDS)


def _close(transport: Transport | None) -> None:
    if transport is not None:
        try:
            transport.close()
        except Exception:  # a broken transport may fail to close; it is dropped either way
            logger.debug("closing the relay transport failed", exc_info=True)


def relay_drain(*, max_batches: int | None = None) -> int:
    """Relay what is pending now (for `outbox_relay --once`); returns how many rows were published."""
    transport = open_transport()
    published = batches = 0
    try:
        while max_batches is None or batches < max_batches:
            result = relay_once(transport)
            published += result.published
            batches += 1
            # Stop when nothing moved (rows left are held back by a retry) or the backlog is empty.
            if result.published == 0 or (result.locked < settings.OUTBOX_BATCH_SIZE and not result.held_back):
                break
    finally:
        transport.close()
    return published
