"""The one task decorator every Taskplane task uses: explicit name and queue, safe defaults, metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.core.task_contract import TASK_QUEUES
from workers.app import app


def taskplane_task(name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register a task under its contract name with acks_late and time limits.

    Its queue comes from the contract through ``task_routes`` (Celery routes by name, so a task
    sent by name from anywhere lands on the same queue).

    Tasks take ids or small JSON and must be idempotent: late acknowledgement means a task whose
    worker died is delivered again.
    """
    if name not in TASK_QUEUES:
        raise ValueError(f"Task {name!r} is not listed in apps.core.task_contract.TASK_QUEUES")
    settings = {
        "name": name,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "soft_time_limit": app.conf.task_soft_time_limit,
        "time_limit": app.conf.task_time_limit,
        "ignore_result": True,
        **options,
    }
    return app.task(**settings)
