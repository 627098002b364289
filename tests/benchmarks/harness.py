"""Scaffolding for benchmarks: a scratch database and Redis DB, real Celery workers, clean-up on any exit.

Import this module before Django is set up: ``configure()`` points ``settings.test`` at the scratch
database and broker through the same TEST_* variables the test suite uses.
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
_STARTED = time.monotonic()
_children: list[subprocess.Popen] = []


def log(message: str) -> None:
    """A progress line on stderr (stdout is kept for the figures)."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Scratch:
    """Where a benchmark may write freely: its own PostgreSQL database and Redis database number."""

    server_url: str  # postgres://user@host:port (no database)
    database: str
    redis_url: str

    @property
    def database_url(self) -> str:
        return f"{self.server_url}/{self.database}"

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgres://", "postgresql://", 1)


def configure() -> Scratch:
    """Read the scratch locations (BENCH_* overrides) and export them for settings.test and children."""
    server = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
    scratch = Scratch(
        server_url=server,
        database=os.environ.get("BENCH_DATABASE", "taskplane_bench"),
        redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"),
    )
    os.environ["DJANGO_SETTINGS_MODULE"] = "settings.test"
    os.environ["TEST_DATABASE_URL"] = scratch.database_url
    os.environ["TEST_BROKER_URL"] = scratch.redis_url
    os.environ["TEST_REDIS_URL"] = scratch.redis_url
    os.environ.setdefault("LOG_FORMAT", "json")
    return scratch


def create_database(scratch: Scratch) -> None:
    """(Re)create the scratch database and migrate it with ``manage.py migrate`` in a child process."""
    import psycopg

    drop_database(scratch)
    with psycopg.connect(f"{scratch.server_url}/postgres".replace("postgres://", "postgresql://", 1),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch.database}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=child_env(),
                   check=True)


def drop_database(scratch: Scratch) -> None:
    """Drop the scratch database, disconnecting anyone still in it."""
    import psycopg

    with psycopg.connect(f"{scratch.server_url}/postgres".replace("postgres://", "postgresql://", 1),
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)')


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a child process: this process's, with settings.test aimed at the scratch stores."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "COV_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def stop(process: subprocess.Popen) -> None:
    """SIGKILL the process group: a warm Celery shutdown would wait for the relay's lease to end."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log(f"process {process.pid} did not exit after SIGKILL")
    if process in _children:
        _children.remove(process)


def stop_all() -> None:
    for process in list(_children):
        stop(process)


def install_cleanup() -> None:
    """Kill every child process group on exit, including on SIGTERM/SIGINT and uncaught errors."""
    atexit.register(stop_all)

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)


@contextmanager
def celery_worker(log_path: Path, *args: str, **env: str):
    """Run ``celery -A workers worker`` until the block ends; yields once the worker says it is ready."""
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel", "INFO", *args]
    with open(log_path, "wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=child_env(**env), stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    _children.append(process)
    try:
        wait_until(lambda: b" ready." in log_path.read_bytes() or process.poll() is not None, timeout=60,
                   interval=0.05, message=f"celery worker to be ready (log {log_path})")
        if process.poll() is not None:
            raise RuntimeError(f"celery worker exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        yield process
    finally:
        stop(process)


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return float("nan")
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


class LoadMonitor:
    """Samples the 1-minute load average while a benchmark runs: other work on the machine skews figures."""

    def __init__(self, interval: float = 1.0) -> None:
        import threading

        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadMonitor:
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict:
        return {"cores": os.cpu_count(), "loadavg_1m_start": round(self.samples[0], 2),
                "loadavg_1m_max": round(max(self.samples), 2)}


def wait_for_quiet(*, threshold: float, timeout: float) -> float:
    """Wait (up to ``timeout`` s) until the 1-minute load average is below ``threshold``; returns it."""
    deadline = time.monotonic() + timeout
    load = os.getloadavg()[0]
    while load >= threshold and time.monotonic() < deadline:
        time.sleep(2)
        load = os.getloadavg()[0]
    if load >= threshold:
        log(f"WARNING: load average {load:.2f} on {os.cpu_count()} cores: other work will skew the figures")
    return load
