"""The whole stack as a user runs it: gunicorn serving settings.wsgi, a `celery worker` and `celery beat`, each a
real process that a test can kill -9 and start again, against a private database and broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.helpers import free_port, group_alive, stop_process_group, wait_until
from tests.payment_stub import PaymentStub
from tests.processes import ROOT, process_env
from tests.reliability.observer import EventObserver
from tests.reliability.private_services import PrivatePostgres
from tests.reliability.support import RELAY_ENV, child_pids

# What every process of a fault-injection stack runs with, beyond the test settings:
# - relays tick every second and hand over every 5 s (RELAY_ENV), so a dead one is replaced at once;
# - a retry may take over a request whose web worker died after 3 s instead of 60 (IDEMPOTENCY_LEASE_SECONDS);
# - a Redis broker gives a lost worker's unacknowledged messages back after 15 s instead of an hour, and looks
#   for them every second (CELERY_VISIBILITY_TIMEOUT, which must exceed the task time limit, and the test-only
#   TEST_UNACKED_RESTORE_SECONDS). No delivery here runs for more than a few seconds.
STACK_ENV = {
    **RELAY_ENV,
    "IDEMPOTENCY_LEASE_SECONDS": "3",
    "CELERY_TASK_SOFT_TIME_LIMIT": "10",
    "CELERY_TASK_TIME_LIMIT": "12",
    "CELERY_VISIBILITY_TIMEOUT": "15",
    "TEST_UNACKED_RESTORE_SECONDS": "1",
    "HEARTBEAT_SECONDS": "5",
    "SAGAS_STEP_LOST_SECONDS": "20",
}
WORKER_CONCURRENCY = 3  # one pool child serves the relay, the others run subscribers and the rest
ADMIN_PASSWORD = "fault-injection-only"  # a throwaway account in a throwaway database


class Service:
    """One long-running process of the stack in its own process group: started, killed, started again."""

    def __init__(self, name: str, command: list[str], *, directory: Path, env: dict[str, str],
                 ready: Callable[[Service], bool]) -> None:
        self.name, self.command, self.directory, self.env, self.ready = name, command, directory, env, ready
        self.starts = 0
        self.process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}-{self.starts}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.process.poll() is not None or self.ready(self), timeout=90, interval=0.2,
                   message=f"{self.name} to be ready (log {self.log})")
        assert self.process.poll() is None, f"{self.name} exited at start:\n{self.log.read_text()[-3000:]}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[int]:
        return child_pids(self.pid)

    def kill(self) -> None:
        """kill -9 the main process only; its children live on as orphans until they notice."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def kill_group(self) -> None:
        """kill -9 the main process and every child at once, as a lost node would."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        wait_until(lambda: not group_alive(self.pid), timeout=30, message=f"every process of {self.name} to go")

    def restart_after_death(self) -> None:
        """What a supervisor does once the process is gone: wait for stragglers of its group, then start it."""
        wait_until(lambda: not group_alive(self.pid), timeout=60, message=f"orphans of {self.name} to exit")
        self.start()

    def stop(self) -> None:
        if self.alive():
            stop_process_group(self.process, timeout=40)
        if self.process is not None and group_alive(self.pid):
            os.killpg(self.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join((self.directory / f"{self.name}-{n}.log").read_text(errors="replace")
                         for n in range(1, self.starts + 1))


@dataclass
class StackDatabase:
    """A migrated database in the private cluster, with an admin account and its API key."""

    server: PrivatePostgres
    name: str
    api_key: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def connect(self, **options):
        return self.server.connect(self.name, **options)

    def clone(self, name: str) -> StackDatabase:
        """A copy of this database (the admin and key included), made in milliseconds by PostgreSQL itself."""
        self.server.create_database(name, template=self.name)
        return StackDatabase(self.server, name, self.api_key)


def stack_process_env(*, database_url: str, broker_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of every stack process: the test settings pointed at the private services."""
    env = process_env(broker_url=broker_url)
    env.update(STACK_ENV)
    env.update(TEST_DATABASE_URL=database_url, TEST_REDIS_URL=redis_url, DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
               **extra)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def prepare_database(server: PrivatePostgres, name: str, *, redis_url: str) -> StackDatabase:
    """Create, migrate and seed a database the README's way: migrate, ensure_admin, create_api_key."""
    server.create_database(name)
    env = stack_process_env(database_url=server.url(name), broker_url=redis_url, redis_url=redis_url)
    _manage(env, "migrate", "--noinput")
    _manage(env, "ensure_admin")
    api_key = _manage(env, "create_api_key", "admin", "--name", "fault-injection").strip().splitlines()[-1]
    return StackDatabase(server, name, api_key)


def _http_ready(url: str) -> Callable[[Service], bool]:
    def ready(service: Service) -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return ready


def _logged(text: bytes) -> Callable[[Service], bool]:
    return lambda service: text in service.log.read_bytes()


class Stack:
    """gunicorn (2 workers × 4 threads, like `make run`), one `celery worker` on every queue, and `celery beat`;
    checkouts charge ``payments`` (a provider outside the stack, which its faults never touch)."""

    def __init__(self, directory: Path, *, database: StackDatabase, broker_url: str, redis_url: str,
                 payments: PaymentStub, **extra_env: str) -> None:
        self.directory, self.database, self.broker_url, self.payments = directory, database, broker_url, payments
        self.port = free_port()
        env = stack_process_env(database_url=database.url, broker_url=broker_url, redis_url=redis_url,
                                TEST_PAYMENTS_URL=payments.url, **extra_env)
        python = sys.executable
        self.web = Service("web", [
            python, "-m", "gunicorn", "settings.wsgi", "--config", "compose/gunicorn.conf.py",
            "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--threads", "4", "--graceful-timeout", "5",
        ], directory=directory, env=env, ready=_http_ready(f"{self.base_url}/health/live"))
        self.worker = Service("worker", [
            python, "-m", "celery", "-A", "workers", "worker", "--loglevel", "INFO",
            "--concurrency", str(WORKER_CONCURRENCY), "--hostname", f"faults-{self.port}@%h",
        ], directory=directory, env=env, ready=_logged(b" ready."))
        self.beat = Service("beat", [
            python, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO",
            "--schedule", str(directory / "beat-schedule"),
        ], directory=directory, env=env, ready=_logged(b"beat: Starting"))
        self.services = (self.web, self.worker, self.beat)
        self.env = env
        self.observer = EventObserver(broker_url)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.observer.declare()  # before anything is relayed: events nobody is bound to are dropped
        for service in self.services:
            service.start()

    def keyed_writer(self, prefix: str) -> tuple[Service, Path]:
        """A process publishing sequenced keyed events (tests/reliability/keyed_writer.py) and its outcome log."""
        out = self.directory / f"keyed-{prefix}.jsonl"
        command = [sys.executable, "-m", "tests.reliability.keyed_writer", str(out), prefix]
        service = Service(f"writer-{prefix}", command, directory=self.directory, env=self.env,
                          ready=lambda service: out.exists())
        return service, out

    def heal(self) -> None:
        """Start again whatever a previous fault left dead, as the supervisor would."""
        for service in self.services:
            if not service.alive():
                service.restart_after_death()

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {service.name} =====\n{service.logs()}" for service in self.services)
