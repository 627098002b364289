"""The in-process snapshot of every flag, and how it is kept fresh.

Evaluation never queries: it reads ``current()``. A process loads the snapshot on first use. A
committed change bumps FlagsVersion and publishes a Redis signal; every process's listener thread
reloads within milliseconds. If the signal is lost (or there is no Redis, as in the embedded
default) the listener finds the change by reading the version every FLAGS_POLL_MS (500 ms): one
primary-key read on the listener's own database connection, kept open between polls and replaced
after an error. After fork (gunicorn preload, Celery prefork) the child keeps the parent's snapshot
and starts its own listener. Flags declared in code (apps/flags/declarations.py) that have no row
are in the snapshot with their declared default.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import connection

from apps.flags import metrics
from apps.flags.declarations import declared_flags
from apps.flags.definitions import definition_of
from apps.flags.engine import CompiledFlag
from apps.flags.models import Flag, FlagsVersion

logger = logging.getLogger(__name__)
SIGNAL_CHANNEL = "taskplane:flags:changed"
REDIS_RETRY_SECONDS = 5.0  # after a Redis error, poll this long before subscribing again


@dataclass(frozen=True)
class Snapshot:
    version: int
    flags: dict[str, CompiledFlag] = field(default_factory=dict)


_snapshot: Snapshot | None = None
_dirty = False  # set when this process changed a flag: reload before the next evaluation
_listener_started = False
_listener: threading.Thread | None = None
_stop = threading.Event()
_lock = threading.Lock()


def current() -> Snapshot:
    """The snapshot to evaluate against (loads it, and starts the listener, on first use)."""
    if _snapshot is None or _dirty:
        return reload()
    if not _listener_started:
        _start_listener()
    return _snapshot


def reload() -> Snapshot:
    """Read every flag and swap in a new snapshot (runs on the caller's connection)."""
    global _snapshot, _dirty
    with _lock:
        _dirty = False
        version = FlagsVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0
        flags = {}
        for flag in Flag.objects.prefetch_related("rules"):
            try:
                flags[flag.key] = CompiledFlag(definition_of(flag))
            except Exception:  # one broken definition must not hide every other flag
                logger.exception("Flag %s cannot be compiled; it evaluates to its default", flag.key)
        for key, declaration in declared_flags().items():
            flags.setdefault(key, declaration.compiled)  # no row (yet): the declared default
        _snapshot = Snapshot(version=version, flags=flags)
        metrics.SNAPSHOT_VERSION.labels("flags").set(version)
    if not _listener_started:
        _start_listener()
    return _snapshot


def mark_dirty() -> None:
    """This process wrote a flag change: its next evaluation reloads (read-your-writes)."""
    global _dirty
    _dirty = True


def signal_change(version: int) -> None:
    """Tell every process that flags changed (called after commit)."""
    if not settings.REDIS_URL:
        return  # processes poll the version instead
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).publish(
            SIGNAL_CHANNEL, str(version)
        )
    except redis.RedisError as exc:
        logger.warning("Could not signal flag change %s (processes will poll): %s", version, exc)


def _start_listener() -> None:
    global _listener_started, _listener
    with _lock:
        if _listener_started:
            return
        _listener_started = True
        _listener = thread = threading.Thread(target=_listen, args=(_stop,), name="flags-listener", daemon=True)
    thread.start()


def listener_stop(timeout: float = 10) -> None:
    """Stop this process's listener thread and close its connection (the next evaluation starts a new one)."""
    global _listener_started, _listener, _stop
    with _lock:
        thread, stop = _listener, _stop
        _listener_started, _listener, _stop = False, None, threading.Event()
    stop.set()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


def _listen(stop: threading.Event) -> None:
    poll = settings.FLAGS_POLL_SECONDS
    logged: set[str] = set()

    def warn(message: str, exc: Exception) -> None:
        if str(exc) not in logged:  # once per distinct error, not once per retry
            if len(logged) >= 100:
                logged.clear()
            logged.add(str(exc))
            logger.warning(message, exc)

    try:
        while not stop.is_set():
            try:
                if settings.REDIS_URL:
                    _listen_redis(poll, stop)
                else:
                    _poll(poll, stop)
            except Exception as exc:  # keep listening whatever happens; evaluation must never depend on it
                warn("Flag listener error, polling instead: %s", exc)
                _drop_connection()
                try:
                    # Redis may be down: follow the version by polling for a while before trying it again.
                    _poll(poll, stop, for_seconds=REDIS_RETRY_SECONDS)
                except Exception as poll_exc:
                    warn("Flag version poll failed: %s", poll_exc)
                    _drop_connection()
                    stop.wait(poll)  # the database is failing too: do not spin
    finally:
        _drop_connection()  # the thread's connection must not outlive it


def _listen_redis(poll: float, stop: threading.Event) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(SIGNAL_CHANNEL)
    try:
        _check_version()  # anything missed while not subscribed
        while not stop.is_set():
            pubsub.get_message(timeout=poll)  # a signal, or the poll interval passing
            _check_version()
    finally:
        pubsub.close()


def _poll(poll: float, stop: threading.Event, *, for_seconds: float | None = None) -> None:
    """Check the version every ``poll`` seconds until stopped (or for about ``for_seconds``)."""
    checks = None if for_seconds is None else max(1, round(for_seconds / poll))
    while (checks is None or checks > 0) and not stop.wait(poll):
        _check_version()
        if checks is not None:
            checks -= 1


def _check_version() -> None:
    """Reload when the committed version moved; runs on the listener thread's own, kept connection."""
    try:
        version = FlagsVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0
        if _snapshot is None or version != _snapshot.version:
            reload()
    except Exception:
        _drop_connection()  # a broken connection (database restart, killed backend) is replaced next time
        raise


def _drop_connection() -> None:
    try:
        connection.close()
    except Exception as exc:  # closing a broken connection can fail too; it is gone either way
        logger.debug("Closing the flag listener's connection failed: %s", exc)


def _after_fork_in_child() -> None:
    # The snapshot's data is inherited; the listener thread is not, and a lock it held at fork
    # time would never be released in the child.
    global _listener_started, _listener, _stop, _lock
    _listener_started, _listener, _stop = False, None, threading.Event()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
