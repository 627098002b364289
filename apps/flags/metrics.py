from prometheus_client import Counter, Gauge

SNAPSHOT_VERSION = Gauge(
    "taskplane_flags_snapshot_version", "Flags version this process evaluates against", multiprocess_mode="min"
)
EVALUATION_ERRORS = Counter("taskplane_flags_evaluation_errors_total", "Evaluations answered with ERROR", ["code"])
