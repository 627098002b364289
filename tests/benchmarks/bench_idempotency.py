"""Idempotency middleware benchmark: latency a fresh Idempotency-Key adds to POST /api/orders/, and replays.

    make bench-idempotency   # or: DJANGO_SETTINGS_MODULE=settings.test python -m tests.benchmarks.bench_idempotency

A real gunicorn server (1 worker, 1 thread) serves settings.wsgi from a scratch PostgreSQL database
(BENCH_IDEM_DATABASE, default taskplane_bench_idem; created, migrated with `manage.py migrate`, and
dropped at the end) with its own Redis database for the throttle cache (BENCH_IDEM_REDIS_URL). One
client on a keep-alive requests.Session sends, in shuffled rounds so drift hits every kind alike:
a POST with a fresh key, the same POST without a key, and a replay of a completed key. Latency is
measured client-side. Progress goes to stderr; the last stdout line is the JSON summary, where
``added`` is keyed minus plain at the same percentile. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
ORDER_BODY = json.dumps({"sku": "SKU-BENCH", "quantity": 1}).encode()
KINDS = ("keyed", "plain", "replay")
_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests of each kind (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests of each kind first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-database", action="store_true", help="do not drop the scratch database")
    parser.add_argument("--py-spy", metavar="PATH", default="",
                        help="py-spy binary: profile keyed and plain runs of the server worker, print the difference")
    return parser.parse_args()


def _configure() -> tuple[str, str]:
    """Point settings.test (here and in children) at the scratch stores; return (server URL, database)."""
    server = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
    database = os.environ.get("BENCH_IDEM_DATABASE", "taskplane_bench_idem")
    redis_url = os.environ.get("BENCH_IDEM_REDIS_URL", "redis://127.0.0.1:6379/7")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="settings.test", TEST_DATABASE_URL=f"{server}/{database}",
        TEST_REDIS_URL=redis_url, TEST_BROKER_URL=redis_url, LOG_LEVEL="WARNING", LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    return server, database


def _admin(server: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres".replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(sql)


def _create_database(server: str, database: str) -> None:
    _admin(server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    _admin(server, f'CREATE DATABASE "{database}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)


def _create_api_key() -> str:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections

    from apps.core.api_keys import api_key_create

    get_user_model().objects.create_user(username="bench", password="not-used")
    raw_key = api_key_create(username="bench")[1]
    connections.close_all()
    return raw_key


def _start_server(log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # gthread even with one thread: the sync worker closes the connection after every response.
    command = [sys.executable, "-m", "gunicorn", "settings.wsgi:application", "--bind", f"127.0.0.1:{port}",
               "--workers", "1", "--threads", "1", "--worker-class", "gthread", "--keep-alive", "30",
               "--worker-tmp-dir", "/dev/shm"]
    # Persistent, health-checked connections as in settings.production (settings.test opens one per request).
    env = {**os.environ, "TEST_DATABASE_URL": os.environ["TEST_DATABASE_URL"] + "?conn_max_age=60&conn_health_checks=1"}
    with open(log_path, "wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def live() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        return requests.get(f"{base}/health/live", timeout=2).status_code == 200

    try:
        wait_until(live, timeout=60, interval=0.1, message=f"gunicorn on {base} (log {log_path})")
    except BaseException:
        _stop(process)
        raise
    return process, base


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)  # gunicorn's quick shutdown
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


class Client:
    """Sends the three kinds of request on one keep-alive connection and times them client-side."""

    def __init__(self, base: str, api_key: str) -> None:
        self.url = f"{base}/api/orders/"
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
        self.replay_key = uuid.uuid4().hex
        first = self._post({"Idempotency-Key": self.replay_key})
        if first.status_code != 201:
            raise RuntimeError(f"first keyed POST answered {first.status_code}: {first.text[:500]}")

    def _post(self, headers: dict[str, str]) -> requests.Response:
        return self.session.post(self.url, data=ORDER_BODY, headers=headers, timeout=30)

    def send(self, kind: str) -> float:
        """One request of ``kind``; returns its latency in milliseconds."""
        headers = {"Idempotency-Key": uuid.uuid4().hex if kind == "keyed" else self.replay_key} if kind != "plain" \
            else {}
        started = time.perf_counter_ns()
        response = self._post(headers)
        elapsed = (time.perf_counter_ns() - started) / 1e6
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        if response.status_code != 201 or replayed != (kind == "replay"):
            raise RuntimeError(f"{kind} POST answered {response.status_code} (replayed={replayed}): "
                               f"{response.text[:500]}")
        return elapsed


def _run(client: Client, kinds: tuple[str, ...], rounds: int, rng: random.Random) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    order = list(kinds)
    for _ in range(rounds):
        rng.shuffle(order)
        for kind in order:
            samples[kind].append(client.send(kind))
    return {kind: sorted(values) for kind, values in samples.items()}


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def _record(py_spy: str, pid: str, output: Path, send) -> None:
    """Run ``send`` while py-spy samples the worker (wall clock, idle included, by function)."""
    recorder = subprocess.Popen([py_spy, "record", "--pid", pid, "--rate", "1000", "--format", "raw", "--idle",
                                 "--function", "--output", str(output), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)  # let py-spy attach before the load starts
    send()
    recorder.send_signal(signal.SIGINT)
    recorder.wait(timeout=60)


def _inclusive_ms(raw: Path, requests_sent: int) -> dict[str, float]:
    """Milliseconds per request spent inside each frame (1 sample = 1 ms at 1000 Hz)."""
    inclusive: dict[str, float] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "handle_request" not in stack:
            continue  # waiting for the next request, not serving one
        for frame in set(stack.split(";")):
            inclusive[frame] = inclusive.get(frame, 0.0) + int(count) / requests_sent
    return inclusive


def _profile(py_spy: str, process: subprocess.Popen, client: Client, count: int, workdir: Path) -> None:
    """Profile keyed-only and plain-only runs of the worker and print where the keyed time goes."""
    worker = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=True)
    pid = worker.stdout.split()[0]
    runs: dict[str, dict[str, float]] = {"keyed": {}, "plain": {}}
    chunks = 4  # alternate short keyed and plain recordings, so drift on a busy machine hits both
    for chunk in range(chunks):
        for kind in ("keyed", "plain") if chunk % 2 == 0 else ("plain", "keyed"):
            raw = workdir / f"{kind}-{chunk}.txt"
            _record(py_spy, pid, raw, lambda kind=kind: [client.send(kind) for _ in range(count // chunks)])
            for frame, ms in _inclusive_ms(raw, count // chunks * chunks).items():
                runs[kind][frame] = runs[kind].get(frame, 0.0) + ms
    log(f"py-spy collapsed stacks (raw format): {workdir}/keyed-*.txt, {workdir}/plain-*.txt")
    keyed, plain = runs["keyed"], runs["plain"]
    log("frames by extra ms per request, keyed minus plain (inclusive; a parent includes its children):")
    frames = sorted(set(keyed) | set(plain), key=lambda frame: plain.get(frame, 0.0) - keyed.get(frame, 0.0))
    for frame in frames[:40]:
        extra = keyed.get(frame, 0.0) - plain.get(frame, 0.0)
        log(f"  {extra:+7.3f} ms  (keyed {keyed.get(frame, 0.0):6.3f}, plain {plain.get(frame, 0.0):6.3f})  {frame}")


def main() -> None:
    args = _arguments()
    server, database = _configure()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    workdir = Path(tempfile.mkdtemp(prefix="bench-idem-"))
    process = None
    try:
        log(f"creating and migrating {database}")
        _create_database(server, database)
        api_key = _create_api_key()
        process, base = _start_server(workdir / "gunicorn.log")
        log(f"gunicorn (1 worker, 1 thread) on {base}; log {workdir / 'gunicorn.log'}")
        client = Client(base, api_key)
        rng = random.Random(args.seed)
        log(f"warm-up: {args.warmup} of each kind")
        _run(client, KINDS, args.warmup, rng)
        log(f"measuring: {args.requests} of each kind, shuffled in rounds")
        samples = _run(client, KINDS, args.requests, rng)
        for kind, values in samples.items():
            log(f"  {kind:6} p50 {percentile(values, 0.5):.3f} ms  p90 {percentile(values, 0.9):.3f} ms  "
                f"p99 {percentile(values, 0.99):.3f} ms  mean {sum(values) / len(values):.3f} ms")
        if args.py_spy:
            _profile(args.py_spy, process, client, args.requests, workdir)
        keyed, plain = samples["keyed"], samples["plain"]
        summary = {
            "added_p50_ms": round(percentile(keyed, 0.5) - percentile(plain, 0.5), 3),
            "added_p99_ms": round(percentile(keyed, 0.99) - percentile(plain, 0.99), 3),
            "replay_p50_ms": round(percentile(samples["replay"], 0.5), 3),
            "plain_p50_ms": round(percentile(plain, 0.5), 3),
        }
        target = "met" if summary["added_p50_ms"] <= 1.0 else "MISSED"
        log(f"target added_p50_ms <= 1.0: {target}")
        print(json.dumps(summary), flush=True)
    finally:
        if process is not None:
            _stop(process)
        if args.keep_database:
            log(f"kept database {database}")
        else:
            _admin(server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
