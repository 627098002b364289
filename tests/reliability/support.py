"""Fault-injection tools: a private redis-server, a restartable worker, finding the process that relays or that is
in the middle of a write, and traps that hold writers in flight."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import redis
from django.db import connection

from apps.outbox.serving import _LOCK_NAMESPACE
from tests.helpers import free_port, wait_until
from tests.processes import celery_process

# What every relay test needs: beat starts a relay within a second of one dying, and a lease short
# enough that a warm shutdown (which waits for the running relay) stays quick.
RELAY_ENV = {"OUTBOX_RELAY_TICK_SECONDS": "1", "OUTBOX_RELAY_LEASE_SECONDS": "5"}


class RedisServer:
    """A redis-server of our own on a free port, so outages and flushes touch nobody else."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **options) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, **options)

    def start(self, *extra: str) -> None:
        """Start (or restart, on the same port) an empty server without persistence."""
        self.starts += 1
        log = self.directory / f"redis-{self.port}-{self.starts}.log"
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory), *extra]
        with open(log, "wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.process.poll() is not None or b"Ready to accept connections" in log.read_bytes(),
                   timeout=15, interval=0.01, message=f"redis-server on port {self.port}")
        assert self.process.poll() is None, log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)


@contextmanager
def private_redis(directory: Path):
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


class RestartableWorker:
    """A `celery worker` that can be killed (SIGKILL, whole process group) and started again."""

    def __init__(self, directory: Path, *args: str, broker_url: str, **env: str) -> None:
        self.directory, self.args, self.broker_url, self.env = directory, args, broker_url, env
        self.starts = 0
        self.process: subprocess.Popen | None = None
        self._stack: ExitStack | None = None

    @property
    def log(self) -> Path:
        return self.directory / f"worker-{self.starts}.log"

    def start(self) -> subprocess.Popen:
        self.starts += 1
        self._stack = ExitStack()
        self.process = self._stack.enter_context(celery_process(
            "worker", self.log, *self.args, "--hostname", f"worker{self.starts}@%h",
            broker_url=self.broker_url, **self.env,
        ))
        return self.process

    def kill_group(self) -> None:
        """kill -9 the main process and its pool children at once, as a lost node would."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group had already exited
            pass
        self.process.wait(timeout=10)
        self.stop()

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()  # warm shutdown (SIGTERM) unless the process is already gone
            self._stack = None

    def logs(self) -> str:
        return "\n".join((self.directory / f"worker-{n}.log").read_text() for n in range(1, self.starts + 1))


@contextmanager
def beat(directory: Path, *, broker_url: str, **env: str):
    with celery_process("beat", directory / "beat.log", "--schedule", str(directory / "beat-schedule"),
                        broker_url=broker_url, **env) as process:
        yield process


_RELAY_SLOT_HOLDER = (
    "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def relay_backend_client_port(slot: int = 0, *, conn: psycopg.Connection | None = None) -> int | None:
    """Client port of the connection holding relay ``slot`` in this test database (or ``conn``'s), if any."""
    if conn is not None:
        row = conn.execute(_RELAY_SLOT_HOLDER, [_LOCK_NAMESPACE, slot]).fetchone()
        return row[0] if row else None
    with connection.cursor() as cursor:
        cursor.execute(_RELAY_SLOT_HOLDER, [_LOCK_NAMESPACE, slot])
        row = cursor.fetchone()
    return row[0] if row else None


def pid_with_local_port(port: int) -> int | None:
    """The local process owning a TCP socket bound to ``port`` (the client end of a connection)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
        except OSError:  # the process ended while we looked, or is not ours to inspect
            continue
    return None


def relay_pid(slot: int = 0, *, conn: psycopg.Connection | None = None) -> int | None:
    """The pid of the process currently serving relay ``slot`` (a Celery pool child), if any."""
    port = relay_backend_client_port(slot, conn=conn)
    return pid_with_local_port(port) if port else None


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (gunicorn workers of a master, pool processes of a Celery worker)."""
    children = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if parent_pid(int(entry)) == pid:
                children.append(int(entry))
        except OSError:  # the process ended while we looked
            continue
    return sorted(children)


class TableTrap:
    """Holds a SHARE lock on a table from a connection of its own, so every transaction that writes to it stops
    inside that write, in flight, until released: the moment a kill or a restart hurts most."""

    def __init__(self, conn: psycopg.Connection, table: str) -> None:
        self.conn, self.table = conn, table
        self.conn.execute(f'LOCK TABLE "{table}" IN SHARE MODE')

    def caught_pids(self) -> list[int]:
        """Local pids of the processes whose writes wait on the trap."""
        # Activity is read once per transaction and cached, and the trap's transaction lasts: drop the cache.
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = self.conn.execute(
            "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND client_port IS NOT NULL AND query LIKE %s",
            [f'INSERT INTO "{self.table}"%'],
        ).fetchall()
        return sorted({pid for (port,) in rows if (pid := pid_with_local_port(port))})

    def release(self) -> None:
        try:
            self.conn.rollback()
            self.conn.close()
        except psycopg.Error:  # the server went away with the lock (a restart): nothing is held any more
            pass


def decode_record(raw: bytes) -> dict:
    """The event envelope inside a kombu Redis message record (what the relay LPUSHes)."""
    return json.loads(base64.b64decode(json.loads(raw)["body"]))


class ListConsumer(threading.Thread):
    """Drains one Redis list (a queue bound to the events exchange) into memory, in arrival order."""

    def __init__(self, url: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=10)
        self.queue = queue
        self.records: list[bytes] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                batch = self.client.rpop(self.queue, 1000)  # kombu LPUSHes, so RPOP is arrival order
                if batch:
                    self.records.extend(batch)
                    continue
                item = self.client.brpop([self.queue], timeout=0.5)
                if item:
                    self.records.append(item[1])
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        self.client.close()
