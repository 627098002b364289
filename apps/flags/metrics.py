from prometheus_client import Counter, Gauge

# Labelled so a process that never evaluates a flag (a worker's main process) reports nothing rather
# than 0; "livemin" ignores processes that have exited.
SNAPSHOT_VERSION = Gauge(
    "taskplane_flags_snapshot_version", "Oldest flags version any live process evaluates against", ["scope"],
    multiprocess_mode="livemin",
)
EVALUATION_ERRORS = Counter("taskplane_flags_evaluation_errors_total", "Evaluations answered with ERROR", ["code"])
