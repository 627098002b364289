"""Errors the saga engine tells apart: infrastructure outages, and an instance changed under a transition."""

from __future__ import annotations

import kombu.exceptions
import psycopg
import redis
from django.db import InterfaceError, OperationalError

from apps.outbox.transports import BrokerUnavailable

# A step raising one of these did not fail: the database, broker or Redis is unreachable. The engine hands
# the attempt back (scheduled again) and re-raises, so the task failure policy requeues the message and the
# outage never counts as one of the step's attempts (the same classes as workers/task.py's policy).
INFRASTRUCTURE_ERRORS = (
    OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
    BrokerUnavailable, kombu.exceptions.OperationalError, redis.ConnectionError, redis.TimeoutError,
)


class VersionConflict(Exception):
    """The instance's version moved since it was read: the transition is rolled back and tried again."""


class StepNotDeclared(Exception):
    """The instance's recorded step no longer exists in the code's definition of its saga."""


class SagaUsageError(RuntimeError):
    """The engine was called the wrong way (a programming error, not bad input): e.g. outside a transaction."""
