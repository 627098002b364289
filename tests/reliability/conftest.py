"""Session-wide private services for the fault-injection stacks (a PostgreSQL cluster and a migrated template)."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.reliability.private_services import PrivatePostgres
from tests.reliability.stack import StackDatabase, prepare_database


@pytest.fixture(scope="session")
def private_postgres():
    """A PostgreSQL cluster of the suite's own, which tests may stop, crash and start."""
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def stack_template(private_postgres) -> StackDatabase:
    """A database migrated and seeded once; each stack runs on a copy of it."""
    return prepare_database(private_postgres, "taskplane_template", redis_url=settings.REDIS_URL)
