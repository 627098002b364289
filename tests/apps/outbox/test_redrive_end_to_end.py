"""Re-drive end to end: an order stranded while `orders.auto-reserve` was off, re-driven with a real worker.

Issue 15 §0: with the flag off the subscriber skipped the order's event, its inbox recorded the event as
handled, and nothing could deliver it again: the order stayed pending for good. The relay runs in this
process (relay_drain, over the real broker); a real `celery worker` on the events queue runs the subscriber.
Each phase starts its own worker, so each evaluates the flag as committed before it started (no
reliance on how fast a change propagates).
"""

from __future__ import annotations

import json

import pytest

from apps.core.groups import OPERATORS
from apps.flags.services import flag_save
from apps.orders.models import Order, Reservation
from apps.orders.subscribers import AUTO_RESERVE_FLAG, RESERVE_STOCK
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.serving import relay_drain
from tests.authz import key_client, staff_member
from tests.helpers import wait_until
from tests.processes import celery_process

pytestmark = pytest.mark.django_db(transaction=True)


def _flag(*, on: bool) -> None:
    flag_save(definition={"key": AUTO_RESERVE_FLAG, "enabled": on, "rules": [{"kind": "everyone"}] if on else []},
              actor="tests", reason="re-drive end to end")


def _relayed_until(condition, *, message: str):
    """Relay what is pending (as a relay would) until ``condition`` holds."""
    return wait_until(lambda: relay_drain() is not None and condition(), timeout=60, interval=0.2, message=message)


def _handled(event: OutboxMessage) -> bool:
    return InboxEntry.objects.filter(consumer=RESERVE_STOCK, message_id=event.message_id).exists()


def _skip_logged(log_path, event: OutboxMessage) -> bool:
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    return any("skipped event" in line.get("message", "") and str(event.message_id) in line["message"]
               for line in lines)


def test_an_order_stranded_by_the_flag_is_reserved_once_by_redrive(api_client, tmp_path, broker_redis):
    operator = key_client(staff_member("ops", group=OPERATORS))
    redrive = {"subscriber": RESERVE_STOCK, "reason": "auto-reserve is back on"}
    _flag(on=False)

    with celery_process("worker", tmp_path / "worker-off.log", "-Q", "events", "--concurrency", "1"):
        response = api_client.post("/api/orders/", {"sku": "SKU-REDRIVE", "quantity": 2}, format="json")
        assert response.status_code == 201, response.content
        order_id = response.json()["id"]
        event = OutboxMessage.objects.get(kind="event", name="order.placed", key=f"order:{order_id}")
        _relayed_until(lambda: _handled(event), message="the worker to handle (skip) the order.placed event")
        wait_until(lambda: _skip_logged(tmp_path / "worker-off.log", event), timeout=30,
                   message="the worker to log that the subscriber skipped the event")

    assert Order.objects.get(pk=order_id).status == Order.Status.PENDING  # stranded: handled, not reserved

    _flag(on=True)
    with celery_process("worker", tmp_path / "worker-on.log", "-Q", "events", "--concurrency", "1"):
        first = operator.post(f"/api/outbox/messages/{event.pk}/redrive/", redrive, format="json")
        assert first.status_code == 202, first.content
        assert first.json()["inbox_entry_removed"] is True
        _relayed_until(lambda: Reservation.objects.filter(order_id=order_id).exists(),
                       message=f"the re-driven event to reserve order {order_id}")

        # Re-driving again runs the subscriber again; the order is reserved once all the same.
        second = operator.post(f"/api/outbox/messages/{event.pk}/redrive/", redrive, format="json")
        assert second.status_code == 202, second.content
        delivery_id = second.json()["delivery"]["id"]
        _relayed_until(lambda: OutboxMessage.objects.get(pk=delivery_id).status == "published" and _handled(event),
                       message="the second re-drive to be delivered and handled")

    assert Order.objects.get(pk=order_id).status == Order.Status.RESERVED
    assert Reservation.objects.filter(order_id=order_id).count() == 1
    assert not OutboxMessage.objects.filter(status__in=["dead", "pending"]).exists()  # no failure, no retry
    assert not _skip_logged(tmp_path / "worker-on.log", event)
