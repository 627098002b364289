"""Running the relay as a long-lived loop: a slot lock, wake-ups after commit, and a bounded lease.

A relay holds one of OUTBOX_RELAYS slots for at most OUTBOX_RELAY_LEASE_SECONDS, then hands over
(the Celery task sends its successor to the broker directly: it is the relay's own continuation), so
a worker's warm shutdown never waits long for it. On PostgreSQL the slot is a session advisory lock
on the relay's listening connection: if the relay process dies, PostgreSQL drops the lock with the
connection and the next beat tick starts a replacement. On SQLite (the embedded default, one
machine) it is an exclusive file lock.
"""

from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection

from apps.outbox import metrics
from apps.outbox.relay import relay_once
from apps.outbox.transports import BrokerUnavailable, Transport, open_transport
from apps.outbox.writing import NOTIFY_CHANNEL

logger = logging.getLogger(__name__)
_LOCK_NAMESPACE = 0x7470_6F62  # "tpob": advisory lock ids of relay slots are (namespace, slot)


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


def relay_serve(*, lease_seconds: float | None = None) -> str:
    """Relay until the lease ends. Returns "busy" when every slot is taken, else "lease-ended"."""
    lease = settings.OUTBOX_RELAY_LEASE_SECONDS if lease_seconds is None else lease_seconds
    waker = PostgresWaker() if connection.vendor == "postgresql" else FileWaker()
    try:
        slot = waker.acquire_slot()
        if slot is None:
            return "busy"
        logger.info("Outbox relay serving slot %s for %ss", slot, lease)
        _serve(waker, deadline=time.monotonic() + lease)
        return "lease-ended"
    finally:
        waker.close()


def _serve(waker, *, deadline: float) -> None:
    transport: Transport | None = None
    pause = 0.0  # grows while the broker or the database is failing
    recheck = 0.0  # grows while only rows held back for ordering are found
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if pause:
                time.sleep(min(pause, remaining))
            try:
                transport = transport or open_transport()
                result = relay_once(transport)
            except BrokerUnavailable as exc:
                metrics.BROKER_UNAVAILABLE.inc()
                pause = _grow(pause)
                logger.warning("Broker unavailable, relay retries in %.1fs: %s", pause, exc)
                _close(transport)
                transport = None
                continue
            except DatabaseError as exc:
                pause = _grow(pause)
                logger.warning("Database error, relay retries in %.1fs: %s", pause, exc)
                connection.close()
                continue
            pause = 0.0
            remaining = max(0.0, deadline - time.monotonic())
            if result.locked >= settings.OUTBOX_BATCH_SIZE and result.published:
                recheck = 0.0
                continue  # a full batch: there is more
            if result.held_back:
                # Rows wait on another relay's batch (released within milliseconds) or on a retry's
                # backoff (much longer): look again soon, then less and less often.
                recheck = 0.002 if result.published else min(settings.OUTBOX_POLL_SECONDS, max(0.002, recheck * 2))
                waker.wait(min(recheck, remaining))
                continue
            recheck = 0.0
            waker.wait(min(settings.OUTBOX_POLL_SECONDS, remaining))
    finally:
        _close(transport)


def _grow(pause: float) -> float:
    return min(5.0, max(0.2, pause * 2))


def _close(transport: Transport | None) -> None:
    if transport is not None:
        transport.close()


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
