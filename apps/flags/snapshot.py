"""The in-process snapshot of every flag, and how it is kept fresh.

Evaluation never queries: it reads ``current()``. A process loads the snapshot on first use. A
committed change bumps FlagsVersion and publishes a Redis signal; every process's listener thread
reloads within milliseconds. If the signal is lost (or there is no Redis, as in the embedded
default) the listener polls the version. After fork (gunicorn preload, Celery prefork) the child
keeps the parent's snapshot and starts its own listener.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import close_old_connections, connection

from apps.flags import metrics
from apps.flags.definitions import definition_of
from apps.flags.engine import CompiledFlag
from apps.flags.models import Flag, FlagsVersion

logger = logging.getLogger(__name__)
SIGNAL_CHANNEL = "taskplane:flags:changed"


@dataclass(frozen=True)
class Snapshot:
    version: int
    flags: dict[str, CompiledFlag] = field(default_factory=dict)


_snapshot: Snapshot | None = None
_dirty = False  # set when this process changed a flag: reload before the next evaluation
_listener_started = False
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
    global _listener_started
    with _lock:
        if _listener_started:
            return
        _listener_started = True
    threading.Thread(target=_listen, name="flags-listener", daemon=True).start()


def _listen() -> None:
    poll = settings.FLAGS_POLL_SECONDS
    while True:
        try:
            if settings.REDIS_URL:
                _listen_redis(poll)
            else:
                _wait_and_check(poll)
        except Exception as exc:  # keep listening whatever happens; evaluation must never depend on it
            logger.warning("Flag listener error, polling instead: %s", exc)
            close_old_connections()
            try:
                _wait_and_check(poll)  # Redis may be down: keep following the version by polling
            except Exception as poll_exc:
                logger.warning("Flag version poll failed: %s", poll_exc)


def _listen_redis(poll: float) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(SIGNAL_CHANNEL)
    try:
        _check_version()  # anything missed while not subscribed
        while True:
            pubsub.get_message(timeout=poll)  # a signal, or the poll interval passing
            _check_version()
    finally:
        pubsub.close()


def _wait_and_check(poll: float) -> None:
    threading.Event().wait(poll)
    _check_version()


def _check_version() -> None:
    try:
        version = FlagsVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0
        if _snapshot is None or version != _snapshot.version:
            reload()
    finally:
        connection.close()  # this thread's connection is used once per check; do not hold it open


def _after_fork_in_child() -> None:
    # The snapshot's data is inherited; the listener thread is not, and a lock it held at fork
    # time would never be released in the child.
    global _listener_started, _lock
    _listener_started = False
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
