"""Resilience kit benchmark: per-call overhead of the shared breaker, limiter and lock on a real Redis,
and the HTTP client's overhead over a bare requests.Session against the same local server.

    make bench-resilience    # or: python -m tests.benchmarks.bench_resilience

Uses its own Redis database (BENCH_RESILIENCE_REDIS_URL, default redis://127.0.0.1:6379/13), which it
empties. Progress goes to stderr; the next-to-last stdout line holds the baselines measured in the
same run (a raw Redis round trip, a bare HTTP request) and the client's overhead with its breaker
turned off; the last line is the JSON summary. The HTTP server runs in its own process.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")

import django

django.setup()

import redis  # noqa: E402
import requests  # noqa: E402

from apps.core.http_client import http_client  # noqa: E402
from apps.core.resilience import (  # noqa: E402
    BreakerPolicy,
    CircuitBreaker,
    DistributedLock,
    RateLimit,
    RateLimiter,
    SharedRedis,
)
from tests.apps.core.resilience.scripted_server import ScriptedServer  # noqa: E402
from tests.benchmarks.harness import log  # noqa: E402


def per_call_us(call: Callable[[], object], *, calls: int, batches: int) -> float:
    """Median over ``batches`` of the mean time of one call, in microseconds (after a warm-up batch)."""
    for _ in range(calls):
        call()
    means = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        means.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(means)


def _serve(port_out: Connection, stop: Connection) -> None:
    with ScriptedServer() as server:
        port_out.send(server.base_url)
        stop.recv()


@contextmanager
def server_process() -> Iterator[str]:
    """A ScriptedServer in its own process (sharing our GIL would tax whichever client waits more)."""
    context = multiprocessing.get_context("fork")
    port_out, port_in = context.Pipe()
    stop_out, stop_in = context.Pipe()
    process = context.Process(target=_serve, args=(port_in, stop_out), daemon=True)
    process.start()
    try:
        if not port_out.poll(30):
            raise RuntimeError("the benchmark HTTP server did not start")
        yield port_out.recv()
    finally:
        stop_in.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()


def http_overhead_us(base_url: str, *, calls: int, batches: int) -> tuple[float, float, float]:
    """(bare µs, default client minus bare µs, breaker-less client minus bare µs), from alternating batches."""
    bare = requests.Session()
    client = http_client("bench", base_url=base_url, timeout=5)
    no_breaker = http_client("bench-no-breaker", base_url=base_url, timeout=5, breaker=None)
    bare_url = f"{base_url}/bench"

    def bare_call() -> None:
        bare.get(bare_url, timeout=5).content  # noqa: B018 - read the body, as a caller would

    bare_times, differences, without_breaker = [], [], []
    for _ in range(batches):
        bare_us = per_call_us(bare_call, calls=calls, batches=1)
        client_us = per_call_us(lambda: client.get("/bench").content, calls=calls, batches=1)
        plain_us = per_call_us(lambda: no_breaker.get("/bench").content, calls=calls, batches=1)
        bare_times.append(bare_us)
        differences.append(client_us - bare_us)
        without_breaker.append(plain_us - bare_us)
    return statistics.median(bare_times), statistics.median(differences), statistics.median(without_breaker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per timed batch")
    parser.add_argument("--batches", type=int, default=15)
    args = parser.parse_args()

    url = os.environ.get("BENCH_RESILIENCE_REDIS_URL", "redis://127.0.0.1:6379/13")
    raw = redis.Redis.from_url(url)
    raw.flushdb()
    shared = SharedRedis(url, timeout=1.0)
    try:
        log("raw Redis round trip (baseline)")
        ping_us = per_call_us(raw.ping, calls=args.calls, batches=args.batches)

        log("breaker: allow + record_success")
        breaker = CircuitBreaker("bench", BreakerPolicy(), redis=shared)
        breaker_us = per_call_us(lambda: breaker.record_success(breaker.allow()), calls=args.calls,
                                 batches=args.batches)

        log("rate limiter: check")
        limiter = RateLimiter("bench", RateLimit(limit=10**9, period=1), redis=shared)
        limit_us = per_call_us(lambda: limiter.check("key"), calls=args.calls, batches=args.batches)

        log("lock: acquire + release (with auto-renewal registered)")

        def lock_cycle() -> None:
            lock = DistributedLock("bench", ttl=30, redis=shared)
            lock.acquire()
            lock.release()

        lock_us = per_call_us(lock_cycle, calls=args.calls, batches=args.batches)

        log("HTTP: resilient client vs bare requests.Session, same local server")
        with server_process() as base_url:
            # Short alternating batches, many of them: machine noise dwarfs the difference otherwise.
            bare_http_us, overhead_us, no_breaker_us = http_overhead_us(base_url, calls=50,
                                                                        batches=args.batches * 6)
    finally:
        raw.flushdb()

    print(json.dumps({
        "baseline_redis_roundtrip_us": round(ping_us, 1),
        "baseline_bare_http_us": round(bare_http_us, 1),
        "http_overhead_without_breaker_us": round(no_breaker_us, 1),
    }))
    print(json.dumps({
        "breaker_check_us": round(breaker_us, 1),
        "rate_limit_check_us": round(limit_us, 1),
        "lock_acquire_release_us": round(lock_us, 1),
        "http_overhead_us": round(overhead_us, 1),
    }))


if __name__ == "__main__":
    main()
