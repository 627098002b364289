"""Outbox benchmark: writes (publish, publish_many, one event per transaction) vs a raw psycopg insert,
backlog drain vs a raw psycopg + redis-py loop, commit-to-broker latency, and drain speed with a
million retained published rows.

    make bench-outbox        # or: DJANGO_SETTINGS_MODULE=settings.test python -m tests.benchmarks.bench_outbox

It creates (and drops at the end) its own PostgreSQL database (BENCH_DATABASE, default taskplane_bench)
and uses its own Redis database as broker (BENCH_REDIS_URL, default redis://127.0.0.1:6379/11), which it
empties. Progress goes to stderr; the last stdout line is the JSON summary. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tests.benchmarks import harness
from tests.benchmarks.harness import log

BACKLOG = 50_000
KEYS = 50
PER_TRANSACTION = 1_000
SINGLE_TX_EVENTS = 5_000
RETAINED = 1_000_000
EVENTS_QUEUE = "bench.events"  # bound to the events exchange with "bench.#"
RAW_LIST = "bench.raw"
_LOCK_NAMESPACE = 0x7470_6F62  # apps.outbox.serving: advisory locks of relay slots


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relays", default="1,2", help="relay counts to try for the drain (default 1,2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each drain; the best is reported")
    parser.add_argument("--no-unkeyed", action="store_true", help="skip the unkeyed drain runs")
    parser.add_argument("--no-retained", action="store_true", help="skip the 1M-retained-rows drain")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--publishers", type=int, default=4, help="publisher processes in the latency run")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile relay_drain() in this process and print the top functions to stderr")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load average to drop below 1")
    parser.add_argument("--writes-only", action="store_true", help="measure the write side only (no drains)")
    parser.add_argument("--write-rounds", type=int, default=3, help="rounds of the write measurements (best kept)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the scratch database")
    return parser.parse_args()


class Bench:
    """Shared state of one run: the scratch stores, an admin connection, the broker client."""

    def __init__(self, scratch: harness.Scratch, logs: Path) -> None:
        import psycopg
        import redis

        self.scratch, self.logs = scratch, logs
        self.admin = psycopg.connect(scratch.dsn, autocommit=True)
        self.redis = redis.Redis.from_url(scratch.redis_url)
        self.runs = 0

    def bind_events_queue(self) -> None:
        """Declare a queue bound to the events exchange, as an external consumer would (kombu on Redis)."""
        from django.conf import settings
        from kombu import Connection, Exchange, Queue

        exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic", durable=True)
        with Connection(self.scratch.redis_url) as connection:
            Queue(EVENTS_QUEUE, exchange, routing_key="bench.#")(connection.channel()).declare()

    def reset_broker(self) -> None:
        """Empty the benchmark's lists and whatever a killed worker left (its queue, unacked messages)."""
        self.redis.delete(EVENTS_QUEUE, RAW_LIST, "outbox", "unacked", "unacked_index", "unacked_mutex")

    def relay_slots_held(self) -> int:
        return self.admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s", [_LOCK_NAMESPACE]
        ).fetchone()[0]

    def wait_slots_free(self) -> None:
        harness.wait_until(lambda: self.relay_slots_held() == 0, timeout=30, interval=0.05,
                           message="relay slots of a killed worker to be released")

    @contextmanager
    def worker(self, relays: int):
        """A real worker consuming only the outbox queue, with ``relays`` slots and as many processes.

        A worker starts its own relays when it is ready (workers/startup.py). Here the benchmark holds
        every slot while the worker starts, so those relays end at once ("busy") and each measurement
        starts its relays itself, when its clock starts, as before.
        """
        import psycopg

        self.runs += 1
        log_path = self.logs / f"worker-{self.runs}-relays{relays}.log"
        holder = psycopg.connect(self.scratch.dsn, autocommit=True)
        try:
            for slot in range(relays):
                holder.execute("SELECT pg_advisory_lock(%s, %s)", [_LOCK_NAMESPACE, slot])
            with harness.celery_worker(log_path, "-Q", "outbox", "--concurrency", str(relays), "--without-heartbeat",
                                       "--without-mingle", "--without-gossip", OUTBOX_RELAYS=str(relays)) as process:
                harness.wait_until(lambda: log_path.read_text().count("'busy'") >= relays, timeout=30, interval=0.05,
                                   message=f"the worker's start-up relays to find the slots held (log {log_path})")
                holder.close()
                yield process
        finally:
            holder.close()

    def start_relays(self, relays: int) -> None:
        from workers.app import app

        for _ in range(relays):
            app.send_task("outbox.relay")

    def drain_with_worker(self, *, relays: int, keyed: bool, label: str, timeout: float = 90.0) -> dict:
        """Time a real worker's relays draining the pending backlog (from the relay tasks' send to empty)."""
        from tests.benchmarks.outbox_backlog import pending

        self.reset_broker()
        self.wait_slots_free()
        backlog = pending(self.admin)
        with self.worker(relays):
            started = time.perf_counter()
            self.start_relays(relays)
            remaining = backlog
            while remaining and time.perf_counter() - started < timeout:
                time.sleep(0.05)
                remaining = pending(self.admin)
            seconds = time.perf_counter() - started
        delivered = self.redis.llen(EVENTS_QUEUE)
        moved = backlog - remaining
        eps = round(moved / seconds)
        log(f"{label}: relays={relays} keyed={keyed}: {moved}/{backlog} drained in {seconds:.2f}s = {eps}/s; "
            f"{delivered} on {EVENTS_QUEUE}" + (" (TIMED OUT)" if remaining else ""))
        if delivered < moved:
            log(f"WARNING: {moved} rows marked published but only {delivered} messages on {EVENTS_QUEUE}")
        return {"eps": eps, "seconds": round(seconds, 3), "delivered": delivered, "timed_out": bool(remaining)}

    def drain_raw(self) -> int:
        from django.conf import settings

        from tests.benchmarks.outbox_backlog import raw_drain

        self.reset_broker()
        moved, seconds = raw_drain(self.scratch.dsn, self.scratch.redis_url, target_list=RAW_LIST,
                                   batch_size=settings.OUTBOX_BATCH_SIZE)
        delivered = self.redis.llen(RAW_LIST)
        if delivered != moved:
            log(f"WARNING: raw loop moved {moved} rows but {RAW_LIST} holds {delivered}")
        return round(moved / seconds)

    def latency(self, *, relays: int, seconds: float, publishers: int, writer: str) -> dict:
        """Commit-to-broker latency at 1,000 events/s with ``relays`` relays of a real worker."""
        from tests.benchmarks.outbox_backlog import TABLE, pending
        from tests.benchmarks.outbox_latency import measure_latency

        log(f"latency: {relays} relay(s), 1000 events/s for {seconds:.0f}s (+1s warm-up), "
            f"{publishers} {writer} writers")
        self.admin.execute(f"TRUNCATE {TABLE}")
        self.reset_broker()
        self.wait_slots_free()
        with self.worker(relays):
            self.start_relays(relays)
            harness.wait_until(lambda: self.relay_slots_held() == relays, timeout=30, interval=0.02,
                               message="relays to hold their slots")
            latency = measure_latency(redis_url=self.scratch.redis_url, queue=EVENTS_QUEUE, rate=1000.0,
                                      seconds=seconds, warmup=1.0, keys=KEYS, publishers=publishers, writer=writer,
                                      drained=lambda: pending(self.admin) == 0)
        log(f"latency ms with {relays} relay(s), {writer} writers: {latency}")
        return latency

    def drain_in_process(self, *, profile: bool) -> int:
        """relay_drain() in this process: the relay code without Celery, optionally under cProfile."""
        from django.db import connection

        from apps.outbox.serving import relay_drain
        from tests.benchmarks.outbox_backlog import pending

        self.reset_broker()
        backlog = pending(self.admin)
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        moved = relay_drain()
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        connection.close()
        log(f"in-process relay_drain: {moved}/{backlog} in {seconds:.2f}s = {moved / seconds:.0f}/s"
            + (" (under cProfile)" if profile else ""))
        if profiler:
            stats = pstats.Stats(profiler, stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(30)
            stats.sort_stats("tottime").print_stats(25)
        return round(moved / seconds)


def _best(runs: dict[int, list[dict]]) -> tuple[int, int]:
    """The relay count with the highest events/s over its rounds, and that figure."""
    return max(((relays, max(r["eps"] for r in rounds)) for relays, rounds in runs.items()), key=lambda item: item[1])


def _writes(bench: Bench, *, rounds: int) -> dict:
    """The write side, in interleaved rounds (best of each kept); ends with publish()'s rows in the table."""
    from tests.benchmarks import outbox_writes as writes

    runs: dict[str, list[float]] = {"raw_insert_eps": [], "publish_many_eps": [], "publish_single_tx_eps": [],
                                    "publish_eps": []}
    for round_number in range(1, rounds + 1):
        writes.truncate(bench.admin)
        runs["raw_insert_eps"].append(writes.raw_insert_eps(bench.scratch.dsn, count=BACKLOG, keys=KEYS,
                                                            per_transaction=PER_TRANSACTION))
        writes.truncate(bench.admin)
        runs["publish_many_eps"].append(writes.publish_many_eps(count=BACKLOG, keys=KEYS,
                                                                per_transaction=PER_TRANSACTION))
        writes.truncate(bench.admin)
        runs["publish_single_tx_eps"].append(writes.publish_single_tx_eps(count=SINGLE_TX_EVENTS, keys=KEYS))
        writes.truncate(bench.admin)
        runs["publish_eps"].append(writes.publish_eps(count=BACKLOG, keys=KEYS, per_transaction=PER_TRANSACTION))
        log(f"writes round {round_number}: " + ", ".join(f"{name}={values[-1]:.0f}" for name, values in runs.items()))
    best = {name: round(max(values)) for name, values in runs.items()}
    return {**best, "publish_us": round(1e6 / best["publish_eps"], 1),
            "publish_many_ratio": round(best["publish_many_eps"] / best["raw_insert_eps"], 3),
            "writes_runs": {name: [round(value) for value in values] for name, values in runs.items()},
            "writes": f"{BACKLOG} events over {KEYS} keys, {PER_TRANSACTION} per transaction "
                      f"(publish_single_tx_eps: {SINGLE_TX_EVENTS} transactions of one); raw = psycopg executemany"}


def run(args: argparse.Namespace, scratch: harness.Scratch, logs: Path) -> dict:
    import django

    django.setup()
    from django.conf import settings

    from tests.benchmarks import outbox_backlog as backlog

    bench = Bench(scratch, logs)
    bench.redis.flushdb()
    bench.bind_events_queue()
    relay_counts = [int(value) for value in args.relays.split(",")]
    result: dict = {"backlog": BACKLOG, "keys": KEYS, "batch_size": settings.OUTBOX_BATCH_SIZE}

    result.update(_writes(bench, rounds=args.write_rounds))
    assert backlog.save_template(bench.admin) == BACKLOG  # the last publish() round's rows
    if args.writes_only:
        return result

    # Rounds interleave the baseline and the relay runs, so drift on a shared machine hits both alike;
    # each configuration reports its best round.
    raw_runs: list[int] = []
    keyed_runs: dict[int, list[dict]] = {relays: [] for relays in relay_counts}
    unkeyed_runs: dict[int, list[dict]] = {relays: [] for relays in relay_counts}
    for round_number in range(1, args.rounds + 1):
        log(f"round {round_number} of {args.rounds}")
        backlog.refill(bench.admin, keyed=True)
        raw_runs.append(bench.drain_raw())
        for relays in relay_counts:
            backlog.refill(bench.admin, keyed=True)
            keyed_runs[relays].append(bench.drain_with_worker(relays=relays, keyed=True, label="drain"))
        if not args.no_unkeyed:
            for relays in relay_counts:
                backlog.refill(bench.admin, keyed=False)
                unkeyed_runs[relays].append(bench.drain_with_worker(relays=relays, keyed=False,
                                                                    label="drain unkeyed"))
    raw_eps = max(raw_runs)
    best_relays, best_eps = _best(keyed_runs)
    # The raw baseline sends one variadic LPUSH per batch, as the relay sends one per queue: like for like.
    result.update(drain_eps=best_eps, drain_relays=best_relays, raw_drain_eps=raw_eps,
                  drain_ratio=round(best_eps / raw_eps, 3), raw_baseline="one variadic LPUSH per batch",
                  raw_drain_eps_runs=raw_runs,
                  drain_eps_runs={str(n): [r["eps"] for r in runs] for n, runs in keyed_runs.items()})
    if not args.no_unkeyed:
        unkeyed_relays, unkeyed_eps = _best(unkeyed_runs)
        result.update(drain_eps_unkeyed=unkeyed_eps, drain_relays_unkeyed=unkeyed_relays,
                      drain_eps_unkeyed_runs={str(n): [r["eps"] for r in runs] for n, runs in unkeyed_runs.items()})

    backlog.refill(bench.admin, keyed=True)
    result["inprocess_drain_eps"] = bench.drain_in_process(profile=args.profile)

    latency_runs = {str(relays): bench.latency(relays=relays, seconds=args.latency_seconds,
                                               publishers=args.publishers, writer="sql")
                    for relays in sorted(set(relay_counts) | {1})}
    latency_runs["1-publish"] = bench.latency(relays=1, seconds=args.latency_seconds, publishers=args.publishers,
                                              writer="publish")
    result["latency_ms"] = {name: latency_runs["1"][name] for name in ("p50", "p95", "p99")}
    result["latency_relays"] = 1
    result["latency_detail"] = latency_runs

    if not args.no_retained:
        bench.admin.execute(f"TRUNCATE {backlog.TABLE}")
        log(f"inserting {RETAINED} published rows")
        seconds = backlog.insert_retained(bench.admin, count=RETAINED, keys=KEYS)
        log(f"retained rows inserted and analysed in {seconds:.1f}s")
        retained_runs, raw_retained_runs = [], []
        for _ in range(args.rounds):
            backlog.refill(bench.admin, keyed=True, truncate=False)
            raw_retained_runs.append(bench.drain_raw())
            backlog.refill(bench.admin, keyed=True, truncate=False)
            retained_runs.append(bench.drain_with_worker(relays=best_relays, keyed=True,
                                                         label="drain 1M retained")["eps"])
        result.update(drain_eps_1m_retained=max(retained_runs), raw_drain_eps_1m_retained=max(raw_retained_runs),
                      drain_ratio_1m_retained=round(max(retained_runs) / max(raw_retained_runs), 3),
                      drain_eps_1m_retained_runs=retained_runs)
    return result


def main() -> int:
    args = _arguments()
    scratch = harness.configure()
    harness.install_cleanup()
    logs = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    log(f"scratch database {scratch.database}, broker {scratch.redis_url}, worker logs in {logs}")
    harness.wait_for_quiet(threshold=1.0, timeout=args.quiet_wait)
    try:
        harness.create_database(scratch)
        with harness.LoadMonitor() as load:
            result = run(args, scratch, logs)
        result["machine"] = load.summary()
    finally:
        harness.stop_all()
        from django.db import connections

        connections.close_all()
        if not args.keep_database:
            harness.drop_database(scratch)
            import redis

            redis.Redis.from_url(scratch.redis_url).flushdb()
    ordered = {name: result.pop(name) for name in
               ("publish_us", "publish_many_eps", "publish_single_tx_eps", "raw_insert_eps", "drain_eps",
                "raw_drain_eps", "drain_ratio", "latency_ms", "drain_eps_1m_retained") if name in result}
    print(json.dumps({**ordered, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
