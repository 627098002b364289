"""One background thread per process that renews leases (locks, bulkhead slots) while they are held.

A lease in Redis has a short TTL so that a holder that dies (kill -9, lost node) frees it quickly;
a live holder keeps it by renewing every third of the TTL. If renewal fails until the TTL has
passed, or Redis says the lease belongs to someone else, the holder is told it lost the lease.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# While Redis errors, renewal is retried this often (until the lease would have expired anyway).
_RETRY_SECONDS = 0.1


@dataclass
class _Kept:
    renew: Callable[[], bool]  # True: still ours. False: taken over or gone. Raises on Redis trouble.
    ttl: float
    on_lost: Callable[[], None]
    due: float
    expires: float  # local, conservative estimate of when the lease ends if not renewed again


class LeaseKeeper:
    """Renews every registered lease at a third of its TTL from a single daemon thread."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A forked child holds none of its parent's leases and inherits no running thread.
        self._cond = threading.Condition()
        self._kept: dict[int, _Kept] = {}
        self._handles = itertools.count(1)
        self._thread: threading.Thread | None = None

    def keep(self, renew: Callable[[], bool], *, ttl: float, on_lost: Callable[[], None]) -> int:
        """Start renewing a lease acquired just now; returns a handle for ``drop``."""
        now = time.monotonic()
        with self._cond:
            handle = next(self._handles)
            self._kept[handle] = _Kept(renew, ttl, on_lost, due=now + ttl / 3, expires=now + ttl)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="resilience-lease-keeper", daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def drop(self, handle: int) -> None:
        """Stop renewing (the lease is being released)."""
        with self._cond:
            self._kept.pop(handle, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(handle, kept) for handle, kept in self._kept.items() if kept.due <= now]
                if not due:
                    next_due = min((kept.due for kept in self._kept.values()), default=now + 60)
                    self._cond.wait(timeout=max(next_due - now, 0.001))
                    continue
            for handle, kept in due:
                self._renew(handle, kept)

    def _renew(self, handle: int, kept: _Kept) -> None:
        started = time.monotonic()
        try:
            held: bool | None = kept.renew()
        except Exception as exc:  # Redis trouble: retry until the lease would have run out
            logger.warning("Lease renewal failed (%s: %s); retrying", type(exc).__name__, exc)
            held = None
        with self._cond:
            if handle not in self._kept:
                return  # released while we were renewing
            now = time.monotonic()
            if held:
                kept.expires = started + kept.ttl
                kept.due = started + kept.ttl / 3
                return
            if held is None and now < kept.expires:
                kept.due = now + _RETRY_SECONDS
                return
            del self._kept[handle]
        kept.on_lost()


keeper = LeaseKeeper()
