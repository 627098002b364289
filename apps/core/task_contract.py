"""The contract between apps and workers: queue names and task names, listed once.

Apps refer to tasks by these strings (they never import ``workers``); workers register their
entry points under the same names.
"""

QUEUES = ("default", "events", "outbox", "notifications")

HEARTBEAT = "core.heartbeat"

# Which queue each task runs on.
TASK_QUEUES = {
    HEARTBEAT: "default",
}
