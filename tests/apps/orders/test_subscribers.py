"""orders.reserve_stock: gated by `orders.auto-reserve`, it says so when it skips; it reserves an order once.

Issue 15 §0: with the flag off the subscriber silently did nothing (no log line, no metric), so a stranded
order left no trace. flag_gated_subscriber (apps/flags/tasks_support.py) logs and counts every skip.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from prometheus_client import REGISTRY

from apps.flags import snapshot as flags_snapshot
from apps.flags.services import flag_save
from apps.flags.tasks_support import flag_gated_subscriber
from apps.orders.models import Order, Reservation
from apps.orders.subscribers import AUTO_RESERVE_FLAG, RESERVE_STOCK, reserve_stock
from tests.apps.flags.conftest import _own_snapshot  # noqa: F401  (autouse: evaluate this test's flags)

pytestmark = pytest.mark.django_db


def _flag(on: bool) -> None:
    rules = [{"kind": "everyone"}] if on else []
    flag_save(definition={"key": AUTO_RESERVE_FLAG, "enabled": on, "rules": rules}, actor="tests", reason="test")
    flags_snapshot.reload()


def _event(order: Order) -> dict:
    payload = {"order_id": order.pk, "sku": order.sku, "quantity": order.quantity, "owner_id": order.owner_id}
    return {"id": str(uuid.uuid4()), "topic": "order.placed", "key": f"order:{order.pk}", "payload": payload}


def _skipped() -> float:
    labels = {"subscriber": RESERVE_STOCK, "flag": AUTO_RESERVE_FLAG}
    return REGISTRY.get_sample_value("taskplane_flags_skipped_events_total", labels) or 0.0


def test_a_skip_is_logged_with_the_event_id_and_counted(user, caplog):
    order = Order.objects.create(owner=user, sku="SKU-1", quantity=1)
    event = _event(order)
    _flag(on=False)
    before = _skipped()

    with caplog.at_level(logging.INFO, logger="apps.flags.tasks_support"):
        reserve_stock(event)

    assert _skipped() == before + 1
    [record] = [r for r in caplog.records if r.name == "apps.flags.tasks_support"]
    assert record.levelno == logging.INFO
    assert event["id"] in record.getMessage() and RESERVE_STOCK in record.getMessage()
    assert AUTO_RESERVE_FLAG in record.getMessage() and "re-drive" in record.getMessage()
    assert (record.event_id, record.subscriber, record.flag) == (event["id"], RESERVE_STOCK, AUTO_RESERVE_FLAG)
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING


def test_with_the_flag_on_nothing_is_skipped_and_the_order_is_reserved(user, caplog):
    order = Order.objects.create(owner=user, sku="SKU-1", quantity=1)
    _flag(on=True)
    before = _skipped()

    with caplog.at_level(logging.INFO, logger="apps.flags.tasks_support"):
        reserve_stock(_event(order))

    assert _skipped() == before
    assert not [r for r in caplog.records if r.name == "apps.flags.tasks_support"]
    assert Order.objects.get(pk=order.pk).status == Order.Status.RESERVED


def test_a_missing_flag_takes_the_default_on_for_auto_reserve(user):
    order = Order.objects.create(owner=user, sku="SKU-1", quantity=1)

    reserve_stock(_event(order))

    assert Reservation.objects.filter(order=order).exists()


def test_running_the_event_again_reserves_the_order_once(user):
    """A re-drive runs the subscriber again; the reservation is the subscriber's own idempotency."""
    order = Order.objects.create(owner=user, sku="SKU-1", quantity=3)
    event = _event(order)

    reserve_stock(event)
    reserve_stock(event)

    assert Reservation.objects.filter(order=order).count() == 1


def test_the_gate_is_reusable_for_any_subscriber():
    calls = []
    gated = flag_gated_subscriber("reports.enabled", subscriber="reports.build", default=False)(calls.append)
    labels = {"subscriber": "reports.build", "flag": "reports.enabled"}
    before = REGISTRY.get_sample_value("taskplane_flags_skipped_events_total", labels) or 0.0

    gated({"id": "e-1", "topic": "report.requested"})

    assert calls == []
    assert REGISTRY.get_sample_value("taskplane_flags_skipped_events_total", labels) == before + 1
    assert gated.flag_gate == {"key": "reports.enabled", "subscriber": "reports.build"}
