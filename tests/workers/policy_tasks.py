"""Tasks and subscribers that exist only for the task failure-policy tests.

Real workers load them with ``--include tests.workers.policy_tasks``. Their names join the task
contract here, in test processes only, so that ``enqueue()`` and the relay accept them.
"""

from __future__ import annotations

import redis
from django.db import connection

from apps.core.heartbeats import heartbeat_record
from apps.core.models import Heartbeat
from apps.core.task_contract import TASK_QUEUES

ALWAYS_FAILS = "tests.policy.always_fails"
PERIODIC_FAILS = "tests.policy.periodic_fails"
BROKER_DOWN = "tests.policy.broker_down"
RECORD = "tests.policy.record"
BLOCKS_FIRST = "tests.policy.blocks_first"
EFFECT_ONCE = "tests.policy.effect_once"
for _name in (ALWAYS_FAILS, PERIODIC_FAILS, BROKER_DOWN, RECORD, BLOCKS_FIRST, EFFECT_ONCE):
    TASK_QUEUES.setdefault(_name, "default")

EFFECTS_TABLE = "test_policy_effects"  # created by the tests that count effects
EFFECT_GATE = "policy-effect-gate"  # a Heartbeat row a test locks to hold effect_once runs inside their body
PLAIN_TOPIC, PLAIN_SUBSCRIBER = "tests.plain", "tests.plain_fails"
SECRET_TOPIC, SECRET_SUBSCRIBER = "tests.secret", "tests.secret_fails"

from apps.outbox import subscriber  # noqa: E402  (after the contract knows the names)
from workers.task import taskplane_task  # noqa: E402


@taskplane_task(ALWAYS_FAILS, max_attempts=3)
def always_fails(label: str) -> None:
    """Fails with an application error every time."""
    raise ValueError(f"injected failure for {label}")


@taskplane_task(PERIODIC_FAILS, periodic=True)
def periodic_fails() -> None:
    """A periodic task whose run fails."""
    raise RuntimeError("injected periodic failure")


@taskplane_task(BROKER_DOWN)
def broker_down() -> None:
    """Fails as a task does when Redis cannot be reached."""
    raise redis.ConnectionError("injected: Redis is unreachable")


@taskplane_task(RECORD)
def record(name: str) -> str:
    """Record a heartbeat named ``name`` (an idempotent effect the tests can see)."""
    return heartbeat_record(name=name).name


@taskplane_task(BLOCKS_FIRST)
def blocks_first(name: str) -> str:
    """The first run marks itself started and waits in the database, for a test to cut its connection."""
    if not Heartbeat.objects.filter(name=f"{name}:started").exists():
        heartbeat_record(name=f"{name}:started")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(120)")
    return heartbeat_record(name=name).name


@taskplane_task(EFFECT_ONCE, effect_once=True)
def effect_once(label: str) -> str:
    """Insert one row into the effects table, after waiting for the gate row a test may hold locked."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM core_heartbeat WHERE name = %s FOR UPDATE", [EFFECT_GATE])
        cursor.execute(f"INSERT INTO {EFFECTS_TABLE} (label) VALUES (%s)", [label])
    return "effect"


@subscriber(PLAIN_TOPIC, name=PLAIN_SUBSCRIBER)
def plain_fails(event: dict) -> None:
    raise ValueError(f"cannot handle {event['payload']}")


@subscriber(SECRET_TOPIC, name=SECRET_SUBSCRIBER)
def secret_fails(event: dict) -> None:
    # The error quotes the payload, as real errors do: it must not reach the outbox table in plaintext.
    raise ValueError(f"cannot handle {event['payload']}")
