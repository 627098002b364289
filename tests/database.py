"""Second connections to the test database, for tests that race or watch the connection under test."""

from __future__ import annotations

import psycopg
from django.db import connection


def other_connection(*, autocommit: bool = False) -> psycopg.Connection:
    """A new psycopg connection to the test database (not Django's; the caller closes it)."""
    connection.ensure_connection()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=autocommit)


def backends_waiting_on_locks() -> int:
    """Backends of the test database waiting on a lock, read from a connection of its own: inside a
    transaction pg_stat_activity is one snapshot, so a writer could not poll it from its own."""
    with other_connection(autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock'").fetchone()[0]
