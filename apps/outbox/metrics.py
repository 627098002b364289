"""Prometheus instruments of the outbox relay."""

from prometheus_client import Counter, Histogram

PUBLISHED = Counter("taskplane_outbox_published_total", "Messages the broker accepted", ["kind", "name"])
FAILED = Counter("taskplane_outbox_failed_total", "Message publish attempts that failed", ["kind", "name"])
DEAD = Counter("taskplane_outbox_dead_lettered_total", "Messages moved to dead letters", ["kind", "name"])
UNROUTABLE = Counter(
    "taskplane_outbox_unroutable_total", "Events published while no queue was bound and no subscriber listened",
    ["name"],
)
RELAY_ERRORS = Counter("taskplane_outbox_relay_errors_total", "Relay cycles that failed, by exception type", ["error"])
BROKER_UNAVAILABLE = Counter("taskplane_outbox_broker_unavailable_total", "Batches abandoned: broker unreachable")
BATCH_SIZE = Histogram(
    "taskplane_outbox_relay_batch_size", "Rows claimed per relay batch", buckets=(1, 5, 20, 100, 250, 500, 1000, 2000)
)
BATCH_SECONDS = Histogram("taskplane_outbox_relay_batch_seconds", "Duration of one claim-publish-mark cycle")
COMMIT_TO_PUBLISH_SECONDS = Histogram(
    "taskplane_outbox_commit_to_publish_seconds", "Time from the message's write to the broker accepting it",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
