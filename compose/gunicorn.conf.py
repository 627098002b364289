"""gunicorn settings shared by `make run` and the container's web process."""

import os

from prometheus_client import multiprocess


def child_exit(server, worker):
    # A dead worker's live gauges must stop counting in the shared metrics directory.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
