"""Helpers of the failure-policy tests: an effects table, a gate lock, a backend to cut."""

from __future__ import annotations

from django.db import connection

from tests.database import other_connection
from tests.workers.policy_tasks import EFFECT_GATE, EFFECTS_TABLE


def effects_create(*, fail_first: bool) -> None:
    """Create the effects table (and the gate row); with ``fail_first`` its first insert fails, as a flaky
    dependency would (a sequence counts attempts across rollbacks)."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {EFFECTS_TABLE} (id serial PRIMARY KEY, label text NOT NULL)")
        cursor.execute("INSERT INTO core_heartbeat (name, beat_at) VALUES (%s, now())", [EFFECT_GATE])
        if not fail_first:
            return
        cursor.execute("CREATE SEQUENCE test_policy_effect_attempts")
        cursor.execute("""
            CREATE FUNCTION test_policy_fail_first() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('test_policy_effect_attempts') = 1 THEN
                    RAISE EXCEPTION 'injected failure of the first effect';
                END IF;
                RETURN NEW;
            END $$""")
        cursor.execute(f"CREATE TRIGGER test_policy_fail_first BEFORE INSERT ON {EFFECTS_TABLE} "
                       "FOR EACH ROW EXECUTE FUNCTION test_policy_fail_first()")


def effects_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {EFFECTS_TABLE}")
        return cursor.fetchone()[0]


def effects_drop() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {EFFECTS_TABLE}")
        cursor.execute("DROP FUNCTION IF EXISTS test_policy_fail_first()")
        cursor.execute("DROP SEQUENCE IF EXISTS test_policy_effect_attempts")


class GateLock:
    """Holds the gate row locked from another connection, so effect_once runs wait inside their body."""

    def __init__(self) -> None:
        self.conn = other_connection()
        self.conn.execute("SELECT 1 FROM core_heartbeat WHERE name = %s FOR UPDATE", [EFFECT_GATE])

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def backend_running(query_fragment: str) -> int | None:
    """The pid of a backend of the test database whose current query contains ``query_fragment``."""
    with other_connection(autocommit=True) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                           "AND query LIKE %s AND pid <> pg_backend_pid()", [f"%{query_fragment}%"]).fetchone()
    return row[0] if row else None
