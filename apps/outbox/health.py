"""The outbox's /health/ check: the relay makes progress (registered from OutboxConfig.ready)."""

from __future__ import annotations

import dataclasses

from django.db import DatabaseError, connection
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable

from apps.outbox.selectors import relay_problem


@dataclasses.dataclass
class OutboxRelay(HealthCheck):
    """No message has been due for OUTBOX_RELAY_STALL_SECONDS without a relay cycle succeeding meanwhile."""

    def run(self) -> None:
        try:
            problem = relay_problem()
        except DatabaseError as exc:
            raise ServiceUnavailable(f"Cannot read the outbox relay status ({type(exc).__name__})") from exc
        finally:
            # Checks run on executor threads; a connection left open there would never be reused.
            connection.close()
        if problem:
            raise ServiceUnavailable(problem)
