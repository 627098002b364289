"""Start real `celery worker` / `celery beat` processes against the test database and a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.helpers import stop_process_group, wait_until

ROOT = Path(__file__).resolve().parent.parent
# A worker that consumes the outbox queue starts a relay, which holds a pool process for its lease.
# Where the test process relays itself (relay_drain) or nothing is relayed, workers skip that queue,
# so every pool process runs the tasks under test.
NO_RELAY = ("--queues", "default,events,notifications")


def process_env(*, broker_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a child process that shares this test session's database and broker."""
    db = settings.DATABASES["default"]
    test_db_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{connection.settings_dict['NAME']}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "COV_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="settings.test",
        TEST_DATABASE_URL=test_db_url,
        TEST_BROKER_URL=broker_url or settings.CELERY_BROKER_URL,
        TEST_REDIS_URL=settings.REDIS_URL,
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)  # may override the above, e.g. TEST_DATABASE_URL through a fault-injecting proxy
    return env


@contextmanager
def celery_process(kind: str, log_path: Path, *args: str, broker_url: str | None = None, **env: str):
    """Run `celery -A workers <kind>` for the duration of the block; its output goes to log_path."""
    command = [sys.executable, "-m", "celery", "-A", "workers", kind, "--loglevel", "INFO", *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=process_env(broker_url=broker_url, **env),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        if kind == "worker":
            wait_until(lambda: b" ready." in log_path.read_bytes() or process.poll() is not None,
                       timeout=60, message=f"celery worker to be ready (log {log_path})")
            assert process.poll() is None, log_path.read_text()
        yield process
    finally:
        if process.poll() is None:
            stop_process_group(process)
