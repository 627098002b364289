"""Prometheus instruments of the schedules (in the beat and worker processes that fire and run them)."""

from prometheus_client import Counter, Histogram

FIRES = Counter("taskplane_schedule_fires_total", "Schedule occurrences decided, by schedule and state "
                "(enqueued, buffered, skipped, missed) and by final state (succeeded, failed)",
                ["schedule", "state"])
MISSED = Counter("taskplane_schedule_missed_total", "Occurrences older than the catch-up window, recorded as missed",
                 ["schedule"])
LATENESS = Histogram(
    "taskplane_schedule_lateness_seconds", "From a fire's nominal time to its task row entering the outbox",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
TICK_SECONDS = Histogram("taskplane_schedule_tick_seconds", "One claim-fire-advance transaction of the firing loop")
