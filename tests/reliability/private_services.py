"""Private PostgreSQL and RabbitMQ servers, started by the tests themselves, so stopping them touches nobody else.

The machine's shared PostgreSQL, Redis and RabbitMQ serve every other suite running at the same time; a fault
injection test never stops or restarts them. It starts its own cluster and node on free ports instead, and
fails loudly (no skip) when the server binaries are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.helpers import free_port, wait_until

# initdb refuses to run as root: under root the cluster belongs to this account.
POSTGRES_OS_USER = "postgres"


def _postgres_bindir() -> Path:
    """Where initdb and pg_ctl live: TEST_PG_BINDIR, the newest /usr/lib/postgresql/<v>/bin, or the PATH."""
    candidates = [os.environ.get("TEST_PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name),
                         reverse=True)
    initdb = shutil.which("initdb")
    candidates.append(str(Path(initdb).parent) if initdb else "")
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise AssertionError("PostgreSQL server binaries (initdb, pg_ctl) not found: install the PostgreSQL server "
                         "package or set TEST_PG_BINDIR. The fault-injection suite starts a private cluster.")


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb, then pg_ctl start/stop), on a free port with its own socket dir."""

    def __init__(self) -> None:
        self.bindir = _postgres_bindir()
        # Not under pytest's tmp_path: its 0700 parents are root's, and the cluster may belong to `postgres`.
        self.directory = Path(tempfile.mkdtemp(prefix="taskplane-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(POSTGRES_OS_USER)
            except KeyError as exc:
                raise AssertionError(f"Running as root, a PostgreSQL cluster needs the {POSTGRES_OS_USER!r} "
                                     "account (initdb refuses root).") from exc
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", POSTGRES_OS_USER, "--"]
        self.stops = 0

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [*self._as_user, str(self.bindir / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def init(self) -> None:
        """Create the cluster (trust authentication on loopback, user `postgres`)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        # fsync off: a stop here is a clean shutdown or a process crash, never a power loss, and the shared
        # machine's disk stays quiet. Fast shutdown checkpoints, so nothing committed is lost either way.
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean, like a service stop) or ``immediate`` (a crash; recovery on start)."""
        self.stops += 1
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", **options) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=5,
                               **options)

    def create_database(self, name: str, *, template: str | None = None) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))

    def destroy(self) -> None:
        if self.running():
            subprocess.run([*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def _rabbitmq_script(name: str) -> str:
    # Debian's /usr/sbin wrappers re-run everything as the `rabbitmq` account with its HOME and cookie; the
    # scripts they wrap take our environment as it is.
    packaged = Path("/usr/lib/rabbitmq/bin") / name
    found = str(packaged) if packaged.is_file() else shutil.which(name)
    if not found:
        raise AssertionError(f"{name} not found: install rabbitmq-server. The fault-injection suite starts a "
                             "private RabbitMQ node.")
    return found


class PrivateRabbitMQ:
    """A RabbitMQ node of our own: unique node name, free AMQP and distribution ports, its own cookie and data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.node = f"taskplane-test-{os.getpid()}-{self.port}@localhost"
        self.process: subprocess.Popen | None = None
        self.starts = 0
        (directory / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq's, which names the shared node
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        self.env = {
            **os.environ,
            "HOME": str(directory),  # the Erlang cookie is created and read here, shared by server and rabbitmqctl
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def log(self) -> Path:
        return self.directory / f"rabbitmq-{self.starts}.log"

    def start(self) -> None:
        """Start the node in the foreground of a process we own; its queues and messages survive a stop."""
        self.starts += 1
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen([_rabbitmq_script("rabbitmq-server")], env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.process.poll() is not None or b"completed with" in self.log.read_bytes(),
                   timeout=120, interval=0.1, message=f"RabbitMQ node {self.node} to boot (log {self.log})")
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def stop(self) -> None:
        """Stop the node as an operator does (`rabbitmqctl stop`): connections are closed, durable queues kept."""
        if self.process is None or self.process.poll() is not None:
            return
        self.ctl("stop")
        self.process.wait(timeout=60)

    def ctl(self, *args: str) -> str:
        result = subprocess.run([_rabbitmq_script("rabbitmqctl"), "-n", self.node, *args], env=self.env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"rabbitmqctl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def queue_depths(self) -> dict[str, int]:
        """Messages per queue, ready and unacknowledged together."""
        depths = {}
        for line in self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages").splitlines():
            name, _, count = line.rpartition("\t")
            if name:
                depths[name] = int(count)
        return depths

    def destroy(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
