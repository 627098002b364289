"""Saga engine benchmark: 3-step no-op sagas end to end on real workers vs a bare Celery chain of 3 no-op tasks.

    make bench-sagas        # or: DJANGO_SETTINGS_MODULE=settings.test python -m tests.benchmarks.bench_sagas

Both run in the same worker (relay inside it, as deployed) on the same Redis broker, in the same run. It
creates (and drops) its own PostgreSQL database (BENCH_DATABASE, default taskplane_bench_sagas) and uses
its own Redis database (BENCH_REDIS_URL, default redis://127.0.0.1:6379/12), which it empties. Step-to-step
latency is the time from one step's end to the next step's start (database clock), measured with one saga
in flight at a time. Progress goes to stderr; the last stdout line is the JSON summary (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tests.benchmarks import harness
from tests.benchmarks.harness import log

INCLUDE = "tests.apps.sagas.sagas_under_test,tests.benchmarks.saga_chain_tasks"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=600, help="sagas (and chains) in the throughput runs")
    parser.add_argument("--sequential", type=int, default=60, help="sagas run one at a time for the latency")
    parser.add_argument("--concurrency", type=int, default=3, help="worker processes (one of them relays)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the scratch database")
    return parser.parse_args()


def _start_sagas(count: int, prefix: str, per_transaction: int = 50) -> float:
    from django.db import transaction

    from apps.sagas.services import saga_start

    started = time.perf_counter()
    for first in range(0, count, per_transaction):
        with transaction.atomic():
            for n in range(first, min(count, first + per_transaction)):
                saga_start("tests.noop", key=f"{prefix}-{n}", input={})
    return started


def _completed(prefix: str) -> int:
    from apps.sagas.models import SagaInstance

    return SagaInstance.objects.filter(key__startswith=f"{prefix}-", state="completed").count()


def _wait_completed(prefix: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _completed(prefix) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {_completed(prefix)} of {count} sagas completed in {timeout}s")
        time.sleep(0.01)


def _run_sagas(count: int) -> float:
    started = _start_sagas(count, "throughput")
    _wait_completed("throughput", count, timeout=600)
    return count / (time.perf_counter() - started)


def _run_chains(count: int, redis_client) -> float:
    from celery import chain

    from tests.benchmarks.saga_chain_tasks import CHAIN_DONE, done, noop

    redis_client.delete(CHAIN_DONE)
    started = time.perf_counter()
    for _ in range(count):
        chain(noop.si(), noop.si(), done.si()).apply_async()
    deadline = time.monotonic() + 600
    while int(redis_client.get(CHAIN_DONE) or 0) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("chains did not finish")
        time.sleep(0.01)
    return count / (time.perf_counter() - started)


def _step_latencies_ms(prefix: str) -> list[float]:
    """End of each step to the start of the next one, for every saga of ``prefix`` (database clock)."""
    from apps.sagas.models import SagaStepAttempt

    rows = (SagaStepAttempt.objects.filter(instance__key__startswith=f"{prefix}-", kind="action")
            .order_by("instance_id", "step_index").values_list("instance_id", "started_at", "finished_at"))
    latencies, previous = [], None
    for instance_id, started_at, finished_at in rows:
        if previous is not None and previous[0] == instance_id:
            latencies.append((started_at - previous[1]).total_seconds() * 1000)
        previous = (instance_id, finished_at)
    return sorted(latencies)


def _run_sequential(count: int) -> list[float]:
    for n in range(count):
        _start_sagas(1, f"sequential{n}", per_transaction=1)
        _wait_completed(f"sequential{n}", 1, timeout=60)
    latencies = []
    for n in range(count):
        latencies.extend(_step_latencies_ms(f"sequential{n}"))
    return sorted(latencies)


def main() -> None:
    args = _arguments()
    os.environ.setdefault("BENCH_DATABASE", "taskplane_bench_sagas")
    os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    scratch = harness.configure()
    harness.install_cleanup()
    load_at_start = open("/proc/loadavg").read().strip()
    log(f"load at start: {load_at_start}")
    harness.create_database(scratch)

    import django

    django.setup()
    import redis

    import tests.apps.sagas.sagas_under_test  # noqa: F401  (declares tests.noop here too)

    client = redis.Redis.from_url(scratch.redis_url)
    client.flushdb()
    logs = Path(tempfile.mkdtemp(prefix="bench-sagas-"))
    summary: dict = {}
    try:
        with harness.LoadMonitor() as load, harness.celery_worker(
                logs / "worker.log", "--concurrency", str(args.concurrency), "--include", INCLUDE):
            _start_sagas(20, "warmup")  # imports, connections, the relay's first wake-up
            _wait_completed("warmup", 20, timeout=120)
            log(f"{args.sagas} sagas of 3 no-op steps ...")
            sagas_per_s = _run_sagas(args.sagas)
            under_load = _step_latencies_ms("throughput")
            log(f"{args.sagas} bare Celery chains of 3 no-op tasks ...")
            chain_per_s = _run_chains(args.sagas, client)
            log(f"{args.sequential} sagas one at a time (step-to-step latency) ...")
            latencies = _run_sequential(args.sequential)
        summary = {
            "sagas_per_s": round(sagas_per_s, 1),
            "step_latency_ms": {"p50": round(harness.percentile(latencies, 0.5), 2),
                                "p99": round(harness.percentile(latencies, 0.99), 2)},
            "chain_per_s": round(chain_per_s, 1),
            "ratio": round(sagas_per_s / chain_per_s, 3),
            "step_latency_under_load_ms": {"p50": round(harness.percentile(under_load, 0.5), 2),
                                           "p99": round(harness.percentile(under_load, 0.99), 2)},
            "sagas": args.sagas, "concurrency": args.concurrency, "loadavg_at_start": load_at_start,
            **load.summary(),
        }
    finally:
        if not args.keep_database:
            from django.db import connections

            connections.close_all()
            harness.drop_database(scratch)
    log(f"worker log: {logs / 'worker.log'}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
