"""A worker that consumes the outbox queue starts its relay itself: no beat needed (issue 15 §0)."""

from __future__ import annotations

import pytest
from django.db import transaction

from apps.core.models import Heartbeat
from apps.outbox import enqueue
from apps.outbox.models import OutboxMessage, RelayStatus
from tests.helpers import wait_until
from tests.processes import celery_process
from workers.startup import consumes_outbox

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_without_beat_publishes_pending_messages(tmp_path, broker_redis):
    """issue 15 §0: with `celery -A workers worker` alone, 128 messages stayed pending for 43 minutes."""
    with transaction.atomic():
        rows = [enqueue("core.heartbeat", args=[f"no-beat-{n}"]) for n in range(3)]

    with celery_process("worker", tmp_path / "worker.log", "--concurrency", "2", OUTBOX_RELAY_LEASE_SECONDS="5"):
        wait_until(lambda: Heartbeat.objects.filter(name__startswith="no-beat-").count() == 3, timeout=60,
                   message=f"the worker's own relay to publish (log {tmp_path / 'worker.log'})")

    assert set(OutboxMessage.objects.filter(pk__in=[row.pk for row in rows]).values_list("status", flat=True)) == {
        "published"}
    assert RelayStatus.objects.get(slot=0).last_success_at is not None
    assert "Started 1 outbox relay(s)" in (tmp_path / "worker.log").read_text()


def test_a_worker_that_does_not_consume_the_outbox_queue_starts_no_relay(tmp_path, broker_redis):
    with celery_process("worker", tmp_path / "worker.log", "-Q", "default,events", "--concurrency", "1"):
        # worker_ready (which would send the relay tasks) runs before the worker logs " ready."
        assert broker_redis.llen("outbox") == 0

    assert "outbox relay" not in (tmp_path / "worker.log").read_text()


@pytest.mark.parametrize(("queues", "expected"), [({"outbox"}, True), ({"default", "outbox"}, True),
                                                  ({"default", "events"}, False)])
def test_consumes_outbox(queues, expected):
    assert consumes_outbox(queues) is expected
