"""Queues and routes, built from the task contract in apps.core."""

from kombu import Exchange, Queue

from apps.core.task_contract import QUEUES
from apps.core.task_contract import TASK_QUEUES as TASK_QUEUE_NAMES

TASK_QUEUES = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES)


def task_routes() -> dict[str, dict[str, str]]:
    """Route every named task to its queue, so a send by name lands where the contract says."""
    return {task: {"queue": queue, "routing_key": queue} for task, queue in TASK_QUEUE_NAMES.items()}
