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
# gunicorn 25+ opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl), shared by every
# server that user starts; Taskplane does not use `gunicornc`, so none is opened.
control_socket_disable = True
