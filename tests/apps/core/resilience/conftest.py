"""Fixtures of the resilience tests: a dedicated, emptied Redis database and an unreachable one."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings

from apps.core.resilience import SharedRedis
from tests.helpers import free_port


@pytest.fixture
def redis_url() -> str:
    """The resilience Redis database (8 unless TEST_RESILIENCE_REDIS_URL says otherwise), emptied."""
    redis.Redis.from_url(settings.RESILIENCE_REDIS_URL).flushdb()
    return settings.RESILIENCE_REDIS_URL


@pytest.fixture
def shared(redis_url) -> SharedRedis:
    return SharedRedis(redis_url)


@pytest.fixture
def unreachable() -> SharedRedis:
    """Redis at a loopback port nobody listens on."""
    return SharedRedis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, down_for=1.0)


@pytest.fixture
def name() -> str:
    """A fresh primitive name: process-local fallback state is keyed by name and outlives a test."""
    return f"t-{uuid.uuid4().hex[:8]}"
