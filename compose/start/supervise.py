"""Run the Procfile with honcho, allowing processes a real grace period to stop.

honcho sends SIGTERM and escalates to SIGKILL after a hard-coded 5 seconds. A Celery worker's
warm shutdown (finish running tasks, acknowledge them) can take longer, and killing it mid-task
is exactly what `make run` must not do, so the grace period is raised here.

Usage: python compose/start/supervise.py STOP_TIMEOUT_SECONDS honcho-arguments...
"""

import sys

import honcho.manager
from honcho.command import main

if __name__ == "__main__":
    honcho.manager.KILL_WAIT = int(sys.argv[1])
    sys.argv = ["honcho", *sys.argv[2:]]
    sys.exit(main())
