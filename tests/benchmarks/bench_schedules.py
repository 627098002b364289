"""Schedules benchmark: 100,000 schedules of which 1,000 are due every second, fired for 30 s by the
firing loop beat runs, and in the same run django-celery-beat's DatabaseScheduler ticking over the same
number of entries (the baseline).

    make bench-schedules      # or: python -m tests.benchmarks.bench_schedules  (needs requirements/bench.txt)

It creates (and drops) its own PostgreSQL database (BENCH_DATABASE, default taskplane_bench_schedules)
and runs a private redis-server as broker. Our loop is the beat scheduler class itself
(workers.schedule_beat.DatabaseFiringScheduler), run in this process so each claim transaction can be
timed; lateness is read from the fire rows (fired_at - nominal_at, database clock). Progress goes to
stderr; the last stdout line is the JSON summary. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.benchmarks import harness
from tests.benchmarks.bench_flags import PrivateRedis
from tests.benchmarks.harness import log, percentile

TASK = "core.heartbeat"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--due-per-second", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long our loop fires (default 30)")
    parser.add_argument("--baseline-seconds", type=float, default=10.0,
                        help="how long django-celery-beat's scheduler ticks (default 10)")
    parser.add_argument("--keep-database", action="store_true")
    return parser.parse_args()


def _create_schedules(total: int, every_second: int) -> None:
    """``every_second`` one-second intervals due together, and the rest daily, spread over the day."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO schedules_schedule (name, task, args, kwargs, cron, timezone, interval_seconds, anchor_at,"
            " enabled, note, jitter_seconds, overlap, pause_on_failure, catchup_window_seconds, next_fire_at, version,"
            " created_at, updated_at) "
            "SELECT 'bench-' || n, %s, '[\"bench\"]', '{}', '', 'UTC', CASE WHEN n <= %s THEN 1 ELSE 86400 END, "
            " date_trunc('second', now()) + interval '30 seconds', true, '', 0, 'allow_all', false, 60, "
            " CASE WHEN n <= %s THEN date_trunc('second', now()) + interval '30 seconds' "
            "      ELSE date_trunc('second', now()) + interval '30 seconds' + (n %% 86400) * interval '1 second' END, "
            " 1, now(), now() FROM generate_series(1, %s) AS n",
            [TASK, every_second, every_second, total])
        cursor.execute("ANALYZE schedules_schedule")


def _create_celery_beat_entries(total: int, every_second: int) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    fast = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    slow = IntervalSchedule.objects.create(every=86400, period=IntervalSchedule.SECONDS)
    batch = [PeriodicTask(name=f"bench-{n}", task=TASK, args='["bench"]',
                          interval=fast if n < every_second else slow) for n in range(total)]
    PeriodicTask.objects.bulk_create(batch, batch_size=5000)
    PeriodicTasks.update_changed()


def measure_ours(seconds: float, workdir: Path) -> dict:
    """Run the beat scheduler class for ``seconds``; time every claim transaction; read lateness from the rows."""
    from django.db import connection

    import workers.schedule_beat as beat
    from apps.schedules.models import ScheduleFire
    from workers import app

    durations: list[tuple[float, int]] = []
    fire_due = beat.schedules_fire_due

    def timed(**kwargs):
        started = time.perf_counter()
        report = fire_due(**kwargs)
        durations.append(((time.perf_counter() - started) * 1000, report.schedules))
        return report

    beat.schedules_fire_due = timed  # the same function, timed: the loop's code is unchanged
    scheduler = beat.DatabaseFiringScheduler(app=app, schedule_filename=str(workdir / "beat-schedule"))
    with connection.cursor() as cursor:
        # The first fires are due 30 s after the insert (a 100,000-row insert and ANALYZE take a while).
        cursor.execute("SELECT min(next_fire_at), extract(epoch FROM min(next_fire_at) - now()) "
                       "FROM schedules_schedule")
        window_start, until = cursor.fetchone()
    log(f"our loop starts; the first fires are due in {float(until):.1f} s")
    deadline = time.monotonic() + float(until) + seconds
    try:
        while time.monotonic() < deadline:
            scheduler.tick()
    finally:
        beat.schedules_fire_due = fire_due
        scheduler.close()
    fired = ScheduleFire.objects.filter(nominal_at__gte=window_start, fired_at__isnull=False)
    lateness = sorted((fire.fired_at - fire.nominal_at).total_seconds() * 1000
                      for fire in fired.only("fired_at", "nominal_at"))
    working = [ms for ms, claimed in durations if claimed]
    span = (max(f.nominal_at for f in fired.only("nominal_at")) - window_start).total_seconds() + 1 if lateness else 1
    return {"fires": len(lateness), "fires_per_s": round(len(lateness) / span, 1),
            "lateness_ms": {"p50": round(percentile(lateness, 0.5), 1), "p99": round(percentile(lateness, 0.99), 1)},
            "tick_ms": round(statistics.median(working), 2) if working else None,
            "claims": len(working), "claimed_per_tick": round(statistics.mean(c for _, c in durations if c), 1)}


def measure_celery_beat(seconds: float) -> dict:
    """django-celery-beat's DatabaseScheduler over the same entries; sending is a no-op (only its tick is timed)."""
    from django_celery_beat.models import PeriodicTasks
    from django_celery_beat.schedulers import DatabaseScheduler

    from workers import app

    class Timed(DatabaseScheduler):
        def apply_entry(self, entry, producer=None):  # publishing is left out: it would only add to its cost
            self.sent += 1

    started = time.perf_counter()
    scheduler = Timed(app=app, lazy=False)
    scheduler.sent = 0
    load_ms = (time.perf_counter() - started) * 1000
    ticks: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        begun = time.perf_counter()
        wait = scheduler.tick()
        ticks.append((time.perf_counter() - begun) * 1000)
        time.sleep(max(0.0, min(wait, 1.0)))
    PeriodicTasks.update_changed()  # what every edit does: the next tick reloads every entry
    begun = time.perf_counter()
    scheduler.tick()
    reload_ms = (time.perf_counter() - begun) * 1000
    return {"celery_beat_tick_ms": round(statistics.median(ticks), 2), "celery_beat_load_ms": round(load_ms, 1),
            "celery_beat_reload_tick_ms": round(reload_ms, 1), "celery_beat_sent": scheduler.sent,
            "celery_beat_ticks": len(ticks)}


def main() -> None:
    args = _arguments()
    workdir = Path(tempfile.mkdtemp(prefix="bench-schedules-"))
    harness.install_cleanup()
    broker = PrivateRedis(workdir)
    os.environ.setdefault("BENCH_DATABASE", "taskplane_bench_schedules")
    os.environ["BENCH_REDIS_URL"] = broker.url
    scratch = harness.configure()
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.benchmarks.celery_beat_settings"  # here and in every child
    try:
        log(f"creating and migrating {scratch.database}; work files in {workdir}")
        harness.create_database(scratch)
        import django

        django.setup()
        _create_celery_beat_entries(args.schedules, args.due_per_second)
        # Ours last: the first fires are due 30 s after the insert, so the loop starts on time, not catching up.
        _create_schedules(args.schedules, args.due_per_second)
        log(f"{args.schedules} schedules and as many django-celery-beat entries; "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        with harness.LoadMonitor() as load:
            ours = measure_ours(args.seconds, workdir)
            log(f"ours: {ours}")
            theirs = measure_celery_beat(args.baseline_seconds)
            log(f"django-celery-beat: {theirs}")
        summary = {"schedules": args.schedules, "fires_per_s": ours["fires_per_s"], "lateness_ms": ours["lateness_ms"],
                   "celery_beat_tick_ms": theirs["celery_beat_tick_ms"], "tick_ms": ours["tick_ms"],
                   "celery_beat_reload_tick_ms": theirs["celery_beat_reload_tick_ms"], **load.summary()}
        met = (ours["fires_per_s"] >= args.due_per_second * 0.98 and ours["lateness_ms"]["p99"] <= 1000
               and ours["tick_ms"] is not None and ours["tick_ms"] <= theirs["celery_beat_tick_ms"] / 10)
        log(f"targets (fires_per_s >= {args.due_per_second}, lateness p99 <= 1000 ms, tick_ms <= 1/10 of "
            f"celery_beat_tick_ms): {'met' if met else 'MISSED'}")
        print(json.dumps(summary), flush=True)
    finally:
        harness.stop_all()
        from django.db import connections

        connections.close_all()
        if args.keep_database:
            log(f"kept database {scratch.database}")
        else:
            harness.drop_database(scratch)
        broker.stop()


if __name__ == "__main__":
    main()
