"""gunicorn settings shared by `make run` and the container's web process."""

import os

from prometheus_client import multiprocess


def child_exit(server, worker):
    # A dead worker's live gauges must stop counting in the shared metrics directory.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


# gunicorn's own refusals (414, 431, malformed requests) answer problem+json like the API (docs/api.md).
worker_class = "apps.core.gunicorn_worker.ProblemThreadWorker"
# The most gunicorn allows: every request the OpenAPI schema describes fits (docs/api.md, "Limits").
limit_request_line = 8190
