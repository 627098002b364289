from prometheus_client import Counter

KEYED_REQUESTS = Counter(
    "taskplane_idempotency_requests_total",
    "Unsafe API requests carrying an Idempotency-Key, by outcome",
    ["outcome"],  # executed, replayed, conflict, mismatch, not_stored, lost_ownership
)
RECLAIMED = Counter("taskplane_idempotency_reclaimed_total", "In-flight records taken over after their lease expired")
