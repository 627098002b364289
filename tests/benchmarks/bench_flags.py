"""Feature-flag benchmark: evaluation cost from the in-process snapshot against django-waffle, and the
time from a committed change to a running Celery worker process evaluating it, with the change's
Redis signal and without it (the listeners' version poll).

    make bench-flags        # or: python -m tests.benchmarks.bench_flags  (needs requirements/bench.txt)

It creates (and drops at the end) its own PostgreSQL database (BENCH_DATABASE, default
taskplane_bench_flags) and runs a private redis-server as broker and flag-signal channel, so nothing
else on the machine can see or disturb it. Progress goes to stderr; the last stdout line is the JSON
summary. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import random
import statistics
import subprocess
import tempfile
import time
import timeit
from pathlib import Path
from unittest import mock

from tests.benchmarks import harness
from tests.benchmarks.harness import log
from tests.helpers import free_port, wait_until

PLAIN, RULES, GROUPS = "bench.plain", "bench.rules", "bench.groups"
WAFFLE_PLAIN, WAFFLE_RULES = "bench_plain", "bench_rules"
GAUGE = "taskplane_flags_snapshot_version"
# Falls through the constraint (country) to the 30% rollout, so both rules are evaluated every call.
CONTEXT = {"user_id": "4242", "groups": [], "staff": False, "country": "us", "plan": "pro"}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="evaluations per timing run (default 200000)")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the best counts (default 5)")
    # Waffle costs 40-100x more per call: 20,000 calls already time it over longer runs than ours.
    parser.add_argument("--waffle-calls", type=int, default=20_000, help="calls per run for waffle (default 20000)")
    parser.add_argument("--waffle-redis-calls", type=int, default=2_000,
                        help="calls per run for waffle on the shared Redis cache (stderr only)")
    parser.add_argument("--changes", type=int, default=10, help="flag changes timed for propagation (default 10)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the scratch database")
    return parser.parse_args()


class PrivateRedis:
    """A redis-server of the benchmark's own: its broker and flag signals cross no other process."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.log = directory / "redis.log"
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(directory)], stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: b"Ready to accept connections" in self.log.read_bytes() or self.process.poll() is not None,
                   timeout=15, interval=0.01, message="the private redis-server")
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        harness.stop(self.process)


def _best_us(statement, calls: int, repeat: int) -> float:
    """Best-of-``repeat`` cost of one call, in microseconds."""
    return min(timeit.repeat(statement, number=calls, repeat=repeat)) / calls * 1e6


def _create_flags() -> None:
    from django.contrib.auth import get_user_model
    from waffle.models import Flag as WaffleFlag

    from apps.flags.services import flag_save

    rollout = [
        {"kind": "constraint", "constraints": [{"attribute": "country", "operator": "in", "values": ["de", "fr"]}]},
        {"kind": "percentage", "params": {"percentage": 30}},
    ]
    by_group = [{"kind": "groups", "params": {"groups": ["bench-beta"]}}]
    for key, rules in ((PLAIN, []), (RULES, rollout), (GROUPS, by_group)):
        flag_save(definition={"key": key, "enabled": True, "rules": rules}, actor="bench", reason="benchmark")
    # The same two flags in waffle: on for everyone; on for two languages, else for 30% of requests.
    WaffleFlag.objects.create(name=WAFFLE_PLAIN, everyone=True)
    WaffleFlag.objects.create(name=WAFFLE_RULES, everyone=None, languages="de,fr", percent=30)
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username="bench-user", password="not-used")
    user.groups.add(Group.objects.create(name="bench-beta"))


def measure_evaluation(args: argparse.Namespace) -> dict[str, float]:
    """Per-call cost of our evaluations (bound and explicit context) and of waffle's flag_is_active."""
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory, override_settings
    from waffle import flag_is_active

    from apps.flags import get_details, is_enabled
    from apps.flags.context import set_context

    set_context(dict(CONTEXT))  # what the request middleware or task_prerun binds
    assert is_enabled(PLAIN) is True and get_details(RULES).reason in ("SPLIT", "DEFAULT")
    results = {}
    for name, key in (("eval_us", PLAIN), ("eval_with_rules_us", RULES)):
        results[name] = _best_us(lambda key=key: is_enabled(key), args.calls, args.repeat)
        explicit = _best_us(lambda key=key: is_enabled(key, CONTEXT), args.calls, args.repeat)
        log(f"{name}: {results[name]:.3f} µs with the bound context, {explicit:.3f} µs with an explicit one")

    request = RequestFactory().get("/")
    request.user = get_user_model().objects.get(username="bench-user")
    request.LANGUAGE_CODE = "en"

    def waffle_call(name: str) -> bool:
        # Each call stands for a new request: waffle memoises a percentage roll on the request object.
        request.__dict__.pop("waffles", None)
        return flag_is_active(request, name)

    assert waffle_call(WAFFLE_PLAIN) is True
    waffle_plain = _best_us(lambda: waffle_call(WAFFLE_PLAIN), args.waffle_calls, args.repeat)
    results["waffle_eval_us"] = _best_us(lambda: waffle_call(WAFFLE_RULES), args.waffle_calls, args.repeat)
    log(f"waffle (local-memory cache): {waffle_plain:.3f} µs plain, {results['waffle_eval_us']:.3f} µs rules "
        f"({args.waffle_calls} calls per run)")
    with override_settings(WAFFLE_CACHE_NAME="default"):  # the shared Redis cache: fresh, but a round trip per read
        redis_rules = _best_us(lambda: waffle_call(WAFFLE_RULES), args.waffle_redis_calls, args.repeat)
    log(f"waffle (shared Redis cache): {redis_rules:.3f} µs rules ({args.waffle_redis_calls} calls per run)")
    set_context(None)
    results.update(_first_eval_in_request(args, request.user))
    results["waffle_first_eval_us"] = waffle_plain
    return results


def _first_eval_in_request(args: argparse.Namespace, user) -> dict[str, float]:
    """The first evaluation of a fresh request with an authenticated user, through FlagContextMiddleware.

    Each timed call is a new request object (built beforehand, not timed) whose view evaluates one
    flag: ``first_eval_in_request_us`` a flag without a groups rule, ``first_eval_groups_rule_us`` one
    with (which reads the user's groups: one query).
    """
    from django.http import HttpResponse
    from django.test import RequestFactory

    from apps.flags import is_enabled
    from apps.flags.context import FlagContextMiddleware

    results = {}
    for name, key, calls in (("first_eval_in_request_us", PLAIN, args.waffle_calls),
                             ("first_eval_groups_rule_us", GROUPS, max(1, args.waffle_redis_calls))):
        middleware = FlagContextMiddleware(lambda request, key=key: HttpResponse(is_enabled(key)))
        best = float("inf")
        for _ in range(args.repeat):
            requests = [RequestFactory().get("/") for _ in range(calls)]
            for fresh in requests:
                fresh.user = user
            started = time.perf_counter()
            for fresh in requests:
                middleware(fresh)
            best = min(best, (time.perf_counter() - started) / calls * 1e6)
        results[name] = best
        log(f"{name}: {best:.3f} µs per fresh request ({calls} requests per run)")
    return results


def _child_versions(metrics_dir: Path, main_pid: int) -> dict[int, float]:
    """The snapshot version each worker child evaluates, read from its own multiprocess metric file."""
    from prometheus_client.mmap_dict import MmapedDict

    versions = {}
    for path in glob.glob(str(metrics_dir / "gauge_*.db")):
        pid = int(Path(path).stem.rsplit("_", 1)[1])
        if pid == main_pid:
            continue  # the main process serves /metrics and never evaluates
        for key, value, _, _ in MmapedDict.read_all_values_from_file(path):
            if json.loads(key)[0] == GAUGE:
                versions[pid] = value
    return versions


def measure_propagation(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float]]:
    """Times (ms) from a committed flag change to every running worker child evaluating it: with the
    Redis signal, and with the signal lost (found by the listeners' version polls, FLAGS_POLL_MS)."""
    from django.conf import settings
    from django.db import transaction

    from apps.core.task_contract import FLAGS_APPLY_SCHEDULED
    from apps.flags.models import FlagsVersion
    from apps.flags.services import flag_save
    from workers.app import app

    metrics_dir = workdir / "prometheus"
    metrics_dir.mkdir()
    with harness.celery_worker(workdir / "worker.log", "-Q", "default", "--concurrency", "2", "--without-heartbeat",
                               "--without-gossip", "--without-mingle",
                               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), WORKER_METRICS_PORT=str(free_port()),
                               WORKER_METRICS_ADDR="127.0.0.1") as worker:
        version = FlagsVersion.objects.get(pk=1).version
        deadline = time.monotonic() + 60
        while len([v for v in _child_versions(metrics_dir, worker.pid).values() if v == version]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker children did not load flags: {_child_versions(metrics_dir, worker.pid)}")
            for _ in range(2):
                app.send_task(FLAGS_APPLY_SCHEDULED)  # its flag gate makes the child load the snapshot
            time.sleep(0.2)
        children = set(_child_versions(metrics_dir, worker.pid))
        log(f"worker children {sorted(children)} evaluate flags v{version}")

        poll_seconds = settings.FLAGS_POLL_SECONDS  # the workers inherit this environment

        def timed_changes(label: str) -> list[float]:
            nonlocal version
            samples = []
            for change in range(args.changes + 1):  # the first is a warm-up
                committed: list[float] = []
                with transaction.atomic():
                    # Registered first, so it runs at the commit itself, before the change's own signal.
                    transaction.on_commit(lambda committed=committed: committed.append(time.perf_counter()))
                    flag_save(definition={"key": PLAIN, "enabled": True, "description": f"{label} {change}"},
                              actor="bench", reason="propagation benchmark")
                version += 1
                while not all(_child_versions(metrics_dir, worker.pid).get(pid) == version for pid in children):
                    if time.perf_counter() - committed[0] > 10:
                        raise RuntimeError(f"v{version} not seen in 10 s: {_child_versions(metrics_dir, worker.pid)}")
                    time.sleep(0.0005)
                elapsed_ms = (time.perf_counter() - committed[0]) * 1000
                if change:
                    samples.append(elapsed_ms)
                log(f"{label} {change}{' (warm-up)' if not change else ''}: v{version} in every child after "
                    f"{elapsed_ms:.1f} ms")
                # A random pause, so that changes land at every phase of the workers' poll interval.
                time.sleep(random.uniform(0.2, 0.2 + poll_seconds))
            return samples

        signalled = timed_changes("change")
        # The fallback: the change's Redis signal is lost, so only the workers' version polls find it.
        with mock.patch("apps.flags.services.signal_change", lambda version: None):
            unsignalled = timed_changes("unsignalled change")
        assert FlagsVersion.objects.get(pk=1).version == version
    return signalled, unsignalled


def main() -> None:
    args = _arguments()
    workdir = Path(tempfile.mkdtemp(prefix="bench-flags-"))
    harness.install_cleanup()
    broker = PrivateRedis(workdir)
    os.environ.setdefault("BENCH_DATABASE", "taskplane_bench_flags")
    os.environ["BENCH_REDIS_URL"] = broker.url
    scratch = harness.configure()
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.benchmarks.waffle_settings"  # here and in every child
    try:
        log(f"creating and migrating {scratch.database}; work files in {workdir}")
        harness.create_database(scratch)
        import django

        django.setup()
        _create_flags()
        evaluation = measure_evaluation(args)
        samples, unsignalled = measure_propagation(args, workdir)
        for label, values in (("propagation", samples), ("propagation without the signal", unsignalled)):
            log(f"{label}: median {statistics.median(values):.1f} ms, max {max(values):.1f} ms "
                f"over {len(values)} changes")
        summary = {
            "eval_us": round(evaluation["eval_us"], 3),
            "eval_with_rules_us": round(evaluation["eval_with_rules_us"], 3),
            "waffle_eval_us": round(evaluation["waffle_eval_us"], 3),
            "first_eval_in_request_us": round(evaluation["first_eval_in_request_us"], 3),
            "first_eval_groups_rule_us": round(evaluation["first_eval_groups_rule_us"], 3),
            "waffle_first_eval_us": round(evaluation["waffle_first_eval_us"], 3),
            "propagation_ms": round(statistics.median(samples), 1),
            "propagation_no_signal_ms": round(statistics.median(unsignalled), 1),
            "propagation_no_signal_max_ms": round(max(unsignalled), 1),
        }
        met = (summary["eval_with_rules_us"] <= 5 and summary["eval_with_rules_us"] < summary["waffle_eval_us"]
               and summary["propagation_ms"] <= 1000 and summary["propagation_no_signal_max_ms"] <= 1000)
        log("targets (eval_with_rules_us <= 5 and below waffle, propagation_ms <= 1000, and <= 1000 ms for every "
            f"change without its signal): {'met' if met else 'MISSED'}")
        print(json.dumps(summary), flush=True)
    finally:
        harness.stop_all()
        from django.db import connections

        connections.close_all()
        # This process's flag listener would report the dropped database until exit.
        logging.getLogger("apps.flags.snapshot").disabled = True
        if args.keep_database:
            log(f"kept database {scratch.database}")
        else:
            harness.drop_database(scratch)
        broker.stop()


if __name__ == "__main__":
    main()
