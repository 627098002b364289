"""Transactional outbox: the only way work leaves a database transaction for the broker.

``from apps.outbox import publish, enqueue, subscriber``. The names resolve lazily so that importing
the package while Django populates its app registry does not import models too early.
"""

from typing import Any

__all__ = ["enqueue", "enqueue_claim_recheck", "publish", "subscriber"]


def __getattr__(name: str) -> Any:
    if name in ("publish", "enqueue", "enqueue_claim_recheck"):
        from apps.outbox import writing

        return getattr(writing, name)
    if name == "subscriber":
        from apps.outbox.registry import subscriber

        return subscriber
    raise AttributeError(name)
