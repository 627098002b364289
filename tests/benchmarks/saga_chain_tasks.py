"""The benchmark's baseline: bare Celery tasks (not Taskplane tasks) chained three at a time.

Loaded by the benchmark's worker with ``--include``. Not durable and not deduplicated: the speed reference.
"""

from __future__ import annotations

import redis
from django.conf import settings

from workers import app

CHAIN_DONE = "bench:sagas:chains-done"


@app.task(name="bench.sagas.noop", queue="default", ignore_result=True)
def noop() -> None:
    """One link of the chain: does nothing."""


@app.task(name="bench.sagas.done", queue="default", ignore_result=True)
def done() -> None:
    """The chain's last link: counts a finished chain."""
    redis.Redis.from_url(settings.REDIS_URL).incr(CHAIN_DONE)
