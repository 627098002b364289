"""The Redis connection behind shared resilience state, and what happens when it is gone.

Breakers, limiters, bulkheads and locks keep their state in Redis so that every web and worker
process sees the same picture. Each operation is one Lua script (atomic, one round trip) bounded
by a short socket timeout. When Redis fails, the connection is marked down for a while: callers
fall back to process-local state immediately instead of paying a timeout on every call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from django.core.signals import setting_changed
from redis.backoff import NoBackoff
from redis.retry import Retry

from apps.core.resilience import metrics

logger = logging.getLogger(__name__)


class SharedStateUnavailable(Exception):
    """Redis could not run the operation; the caller decides how to degrade."""


class LuaScript:
    """A Lua source with its SHA1, run with EVALSHA and loaded on first use per server."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class SharedRedis:
    """A per-process Redis client for resilience state that remembers outages."""

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str | None = None,
        timeout: float | None = None,
        down_for: float | None = None,
    ) -> None:
        # None reads the setting, so the process-wide instance can be built before settings load.
        self._url = url
        self._prefix = prefix
        self._timeout = timeout
        self._down_for = down_for
        self._client: redis.Redis | None = None
        self._pid = 0
        self._down_until = 0.0
        self._down = False
        self._warned_unconfigured = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The Redis URL in use; empty when none is configured."""
        if self._url is None:
            from django.conf import settings

            self._url = settings.RESILIENCE_REDIS_URL or getattr(settings, "REDIS_URL", "") or ""
        return self._url

    @property
    def prefix(self) -> str:
        """Prefix of every key this kit writes."""
        if self._prefix is None:
            from django.conf import settings

            self._prefix = settings.RESILIENCE_KEY_PREFIX
        return self._prefix

    def key(self, kind: str, name: str, suffix: str = "") -> str:
        """Key for one primitive; the name is a hash tag so a primitive's keys share a cluster slot."""
        return f"{self.prefix}:{kind}:{{{name}}}{':' + suffix if suffix else ''}"

    def client(self) -> redis.Redis:
        """Return this process's client; raises SharedStateUnavailable while Redis is marked down."""
        if not self.url:
            if not self._warned_unconfigured:
                self._warned_unconfigured = True
                logger.warning("No Redis configured for resilience state; using process-local state only")
            raise SharedStateUnavailable("no Redis URL configured")
        if self._down and time.monotonic() < self._down_until:
            raise SharedStateUnavailable("Redis marked down")
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            # A forked child must not share its parent's sockets: one client per process.
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = self._connect()
                    self._pid = pid
        return self._client

    def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` atomically; raises SharedStateUnavailable if Redis fails."""
        client = self.client()
        try:
            try:
                result = client.evalsha(script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                result = client.eval(script.source, len(keys), *keys, *args)
        except redis.RedisError as exc:
            self._mark_down(exc)
            raise SharedStateUnavailable(str(exc)) from exc
        if self._down:
            self._mark_up()
        return result

    def _connect(self) -> redis.Redis:
        from django.conf import settings

        timeout = self._timeout if self._timeout is not None else settings.RESILIENCE_REDIS_TIMEOUT_SECONDS
        metrics.REDIS_UP.set(1)
        # No client-side retries: one bounded attempt, then the caller degrades.
        return redis.Redis.from_url(
            self.url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )

    def _mark_down(self, exc: Exception) -> None:
        from django.conf import settings

        down_for = self._down_for if self._down_for is not None else settings.RESILIENCE_REDIS_RETRY_SECONDS
        self._down_until = time.monotonic() + down_for
        if not self._down:
            self._down = True
            metrics.REDIS_UP.set(0)
            logger.warning(
                "Redis for resilience state is unreachable (%s: %s); using process-local state for %.1fs",
                type(exc).__name__, exc, down_for,
            )

    def _mark_up(self) -> None:
        self._down = False
        metrics.REDIS_UP.set(1)
        logger.info("Redis for resilience state is reachable again; state is shared across processes")


_default: SharedRedis | None = None
_default_lock = threading.Lock()


def shared_redis() -> SharedRedis:
    """Return the process-wide SharedRedis configured from settings."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = SharedRedis()
    return _default


def reset_shared_redis() -> None:
    """Forget the process-wide instance so it is rebuilt from settings (tests change settings)."""
    global _default
    _default = None


def _on_setting_changed(setting: str = "", **kwargs: Any) -> None:
    if setting.startswith("RESILIENCE_") or setting == "REDIS_URL":
        reset_shared_redis()


setting_changed.connect(_on_setting_changed, dispatch_uid="resilience-shared-redis")
