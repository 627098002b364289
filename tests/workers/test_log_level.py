"""A Celery process logs at the level of its --loglevel, else at LOG_LEVEL (workers/observability.py).

issue 15 §0: `celery … worker -l warning` was ignored because the logging setup read LOG_LEVEL only,
so CELERY_LOG_LEVEL (which the start scripts pass as --loglevel) did nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.helpers import stop_process_group, wait_until
from tests.processes import ROOT, process_env
from workers import app

pytestmark = pytest.mark.django_db(transaction=True)


def _start_worker(log_path, *args: str, log_level: str):
    name = f"loglevel-{uuid.uuid4().hex[:8]}@%h"
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency", "1", "-n", name, *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=process_env(LOG_LEVEL=log_level), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, name.replace("%h", "")


def _levels(log_path) -> set[str]:
    return {json.loads(line)["level"] for line in log_path.read_text().splitlines() if line.startswith("{")}


def _answers_ping(prefix: str) -> bool:
    replies = app.control.ping(timeout=1) or []
    return any(next(iter(reply)).startswith(prefix) for reply in replies)


@pytest.mark.parametrize(("args", "log_level"), [(("--loglevel", "info"), "WARNING"), ((), "INFO")])
def test_info_lines_follow_the_loglevel_else_log_level(args, log_level, tmp_path, broker_redis):
    """issue 15 §0: `-l info` logs INFO although LOG_LEVEL=WARNING; without -l, LOG_LEVEL=INFO applies."""
    log_path = tmp_path / "worker.log"
    process, _ = _start_worker(log_path, *args, log_level=log_level)
    try:
        wait_until(lambda: b" ready." in log_path.read_bytes() or process.poll() is not None, timeout=90,
                   message=f"the worker's INFO line `… ready.` (log {log_path})")
        assert process.poll() is None, log_path.read_text()[-3000:]
    finally:
        stop_process_group(process)
    assert "INFO" in _levels(log_path)


def test_loglevel_warning_silences_info_although_log_level_is_info(tmp_path, broker_redis):
    """issue 15 §0: `celery … worker -l warning` with LOG_LEVEL=INFO logs no INFO line (it logged them all)."""
    log_path = tmp_path / "worker.log"
    process, prefix = _start_worker(log_path, "--loglevel", "warning", log_level="INFO")
    try:
        wait_until(lambda: _answers_ping(prefix) or process.poll() is not None, timeout=90,
                   message=f"the worker to answer a ping (log {log_path})")
        assert process.poll() is None, log_path.read_text()[-3000:]
    finally:
        stop_process_group(process)
    assert _levels(log_path) <= {"WARNING", "ERROR", "CRITICAL"}, log_path.read_text()[-3000:]
    assert b" ready." not in log_path.read_bytes()
