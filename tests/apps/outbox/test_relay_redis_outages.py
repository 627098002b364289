"""Redis outages that answer instead of hanging up: nothing is charged, nothing dead-lettered (issue 15 §5).

Each test runs a private redis-server (tests/reliability/support.py) and puts it into the failure state
for real: out of memory (`maxmemory` with `noeviction`), a read-only replica (`REPLICAOF` an unreachable
master), or a state where every queue refuses the batch.
"""

from __future__ import annotations

import pytest
import redis
from django.db import transaction
from django.test import override_settings

from apps.outbox import enqueue
from apps.outbox.models import OutboxMessage
from apps.outbox.relay import relay_once
from apps.outbox.transports import BrokerUnavailable, RedisTransport, _is_outage
from tests.reliability.support import private_redis

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(tmp_path):
    with private_redis(tmp_path) as server:
        yield server


@pytest.fixture
def transport(server):
    transport = RedisTransport(server.url)
    yield transport
    transport.close()


def _rows(count: int, *, queue: str | None = None) -> list[OutboxMessage]:
    with transaction.atomic():
        return [enqueue("core.heartbeat", args=[f"n{n}"], key=f"{queue}:{n}", queue=queue) for n in range(count)]


def _untouched(rows: list[OutboxMessage]) -> bool:
    stored = OutboxMessage.objects.filter(pk__in=[row.pk for row in rows])
    return {(row.status, row.attempts, row.last_error) for row in stored} == {("pending", 0, "")}


def _warm(transport: RedisTransport) -> None:
    """One successful batch first, so the failure hits the LPUSHes (bindings are declared once per transport)."""
    _rows(1)
    assert relay_once(transport).published == 1


@override_settings(OUTBOX_MAX_ATTEMPTS=1)
def test_out_of_memory_replies_are_an_outage(server, transport):
    """issue 15 §5: OOM (maxmemory reached, noeviction) abandons the batch instead of charging its messages."""
    _warm(transport)
    server.client().config_set("maxmemory-policy", "noeviction")
    server.client().config_set("maxmemory", "1")  # every write is now refused with OOM
    rows = _rows(3)

    with pytest.raises(BrokerUnavailable, match=r"OOM|OutOfMemory"):
        relay_once(transport)

    assert _untouched(rows), "an outage used up attempts (with OUTBOX_MAX_ATTEMPTS=1 it would dead-letter)"
    server.client().config_set("maxmemory", "0")
    assert relay_once(transport).published == 3


@override_settings(OUTBOX_MAX_ATTEMPTS=1)
def test_a_read_only_replica_is_an_outage(server, transport):
    """issue 15 §5: after a failover the old primary answers READONLY: nothing is charged."""
    _warm(transport)
    server.client().replicaof("127.0.0.1", "1")  # a replica of a master that is not there: reads work, writes fail
    rows = _rows(3, queue="events") + _rows(2)

    with pytest.raises(BrokerUnavailable, match="READONLY"):
        relay_once(transport)

    assert _untouched(rows)
    server.client().replicaof("NO", "ONE")
    assert relay_once(transport).published == 5


@override_settings(OUTBOX_MAX_ATTEMPTS=1)
def test_an_error_that_hits_every_queue_is_an_outage(server, transport):
    """issue 15 §5: when every queue of a batch refuses it, the server is at fault, not the messages."""
    _warm(transport)
    client = server.client()
    client.delete("default", "events")
    client.set("default", "x")
    client.set("events", "x")  # WRONGTYPE on both queues the batch goes to
    rows = _rows(2) + _rows(2, queue="events")

    with pytest.raises(BrokerUnavailable, match="Every queue refused"):
        relay_once(transport)

    assert _untouched(rows)


@pytest.mark.parametrize("error", [
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's unable to persist"),
    redis.exceptions.MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
    redis.exceptions.ResponseError("BUSY Redis is busy running a script."),
    redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."),
])
def test_replies_of_a_server_that_takes_no_writes_are_outages(error):
    """issue 15 §5: the other "cannot write now" replies (LOADING, MISCONF, MASTERDOWN, BUSY, NOREPLICAS)."""
    assert _is_outage(error)
    assert not _is_outage(redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"))
