"""Run the Procfile with honcho, stopping processes the way each expects to be stopped.

Two of honcho's choices do not suit Celery, so they are adjusted here:
- honcho sends SIGTERM to each process *group*. A Celery worker's pool children then die at the
  same moment as the parent, which leaves the parent waiting on dead children instead of a warm
  shutdown. Here SIGTERM goes to the process itself (the Procfile `exec`s each command), which then
  stops its own children; SIGKILL still goes to the whole group as the last resort.
- honcho escalates to SIGKILL after a hard-coded 5 seconds, shorter than a warm shutdown that lets
  running tasks finish. The grace period is the first argument here.

Usage: python compose/start/supervise.py STOP_TIMEOUT_SECONDS honcho-arguments...
"""

import errno
import os
import signal
import sys

import honcho.compat
import honcho.manager
from honcho.command import main


def _terminate_leader(self, pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ESRCH):
            raise


if __name__ == "__main__":
    honcho.manager.KILL_WAIT = int(sys.argv[1])
    honcho.compat.ProcessManager.terminate = _terminate_leader
    sys.argv = ["honcho", *sys.argv[2:]]
    sys.exit(main())
