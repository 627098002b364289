"""Re-drive end to end: an order.placed event re-driven to its subscriber with a real worker starts nothing twice.

Issue 15 §0: re-driving is how an operator runs a subscriber again for one event (the inbox row is
removed, a delivery is written). The relay runs in this process (relay_drain, over the real broker); a
real `celery worker` on the events queue runs orders.start_checkout. The checkout's step tasks go to the
default queue, which nothing consumes here: the saga stays at its first step, so what is counted is
exactly what the subscriber did.
"""

from __future__ import annotations

import pytest

from apps.core.groups import OPERATORS
from apps.orders.subscribers import START_CHECKOUT
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.serving import relay_drain
from apps.sagas.models import SagaInstance, SagaStepAttempt
from tests.authz import key_client, staff_member
from tests.helpers import wait_until
from tests.processes import celery_process

pytestmark = pytest.mark.django_db(transaction=True)


def _relayed_until(condition, *, message: str):
    """Relay what is pending (as a relay would) until ``condition`` holds."""
    return wait_until(lambda: relay_drain() is not None and condition(), timeout=60, interval=0.2, message=message)


def _handled(event: OutboxMessage) -> bool:
    return InboxEntry.objects.filter(consumer=START_CHECKOUT, message_id=event.message_id).exists()


def test_a_redriven_order_placed_event_starts_one_checkout(api_client, tmp_path, broker_redis):
    operator = key_client(staff_member("ops", group=OPERATORS))
    redrive = {"subscriber": START_CHECKOUT, "reason": "checking the subscriber again"}

    with celery_process("worker", tmp_path / "worker.log", "-Q", "events", "--concurrency", "1"):
        response = api_client.post("/api/orders/", {"sku": "BOOK-1", "quantity": 2}, format="json")
        assert response.status_code == 201, response.content
        order_id = response.json()["id"]
        event = OutboxMessage.objects.get(kind="event", name="order.placed", key=f"order:{order_id}")
        _relayed_until(lambda: _handled(event), message="the worker to handle the order.placed event")

        for _ in range(2):  # each re-drive runs the subscriber again; the saga is one per order all the same
            answer = operator.post(f"/api/outbox/messages/{event.pk}/redrive/", redrive, format="json")
            assert answer.status_code == 202, answer.content
            assert answer.json()["inbox_entry_removed"] is True
            delivery_id = answer.json()["delivery"]["id"]
            _relayed_until(lambda: OutboxMessage.objects.get(pk=delivery_id).status == "published"  # noqa: B023
                           and _handled(event), message="the re-drive to be delivered and handled")

    saga = SagaInstance.objects.get(name="orders.checkout", key=str(order_id))
    assert SagaInstance.objects.filter(key=str(order_id)).count() == 1
    assert list(SagaStepAttempt.objects.filter(instance=saga).values_list("step", "state")) == [
        ("approval", "skipped"), ("reserve", "scheduled")]
    assert not OutboxMessage.objects.filter(kind="event", status__in=["dead", "pending"]).exists()
