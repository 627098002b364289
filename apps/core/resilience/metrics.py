"""Prometheus instruments of the resilience kit and the HTTP client."""

from prometheus_client import Counter, Gauge, Histogram

BREAKER_STATE = Gauge(
    "taskplane_breaker_state", "Circuit state last seen by this process: 0 closed, 1 half-open, 2 open",
    ["breaker"], multiprocess_mode="livemostrecent",
)
BREAKER_TRANSITIONS = Counter(
    "taskplane_breaker_transitions_total", "Circuit state changes, counted by the process that made them",
    ["breaker", "from_state", "to_state"],
)
BREAKER_REJECTED = Counter("taskplane_breaker_rejected_total", "Calls refused by an open circuit", ["breaker"])
RATE_LIMIT_DECISIONS = Counter(
    "taskplane_rate_limit_decisions_total", "Rate limiter answers", ["limiter", "decision"]  # allowed, denied
)
BULKHEAD_REJECTED = Counter("taskplane_bulkhead_rejected_total", "Calls refused by a full bulkhead", ["bulkhead"])
LOCK_EVENTS = Counter(
    "taskplane_lock_events_total", "Distributed lock outcomes", ["lock", "event"]  # acquired, busy, lost, released
)
REDIS_UP = Gauge(
    "taskplane_resilience_redis_up", "1 while resilience state is shared through Redis, 0 while process-local",
    multiprocess_mode="livemin",
)
DEGRADED_CALLS = Counter(
    "taskplane_resilience_degraded_total", "Operations served from process-local state because Redis failed",
    ["primitive"],
)

HTTP_REQUESTS = Counter(
    "taskplane_http_client_requests_total", "Outbound HTTP attempts by client, host and status class",
    ["client", "host", "status_class"],  # 2xx..5xx, or "error" when no response arrived
)
HTTP_SECONDS = Histogram(
    "taskplane_http_client_request_duration_seconds", "Outbound HTTP attempt latency", ["client", "host"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_ERRORS = Counter(
    "taskplane_http_client_errors_total", "Outbound HTTP calls that got no usable answer",
    ["client", "host", "error"],  # connection, timeout, circuit_open, rate_limited, other
)
HTTP_RETRIES = Counter(
    "taskplane_http_client_retries_total", "Outbound HTTP attempts repeated by the retry policy",
    ["client", "host", "reason"],
)
