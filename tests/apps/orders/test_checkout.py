"""The orders.checkout saga, service level: each outcome against the real database and the payment stub."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from apps.core.audit import Actor
from apps.core.groups import OPERATORS, VIEWERS
from apps.core.models import OperatorAction
from apps.orders.models import Order, Payment, Product, Reservation
from apps.outbox.models import OutboxMessage
from apps.sagas.models import SagaStepAttempt
from apps.sagas.services import saga_cancel
from apps.sagas.sweeper import saga_sweep
from tests.apps.orders.checkout_support import (
    checkout,
    deliver_published,
    expire_open_attempts,
    published,
    stock,
)
from tests.apps.sagas.support import run_scheduled
from tests.authz import staff_member

pytestmark = pytest.mark.django_db
APPROVAL = "orders.manual-approval"
ORDERS_CHANGELIST = "/admin/orders/order/"


def _keys(stub, path: str) -> list[str]:
    return [received.key for received in stub.requests if received.path == path]


def test_an_order_is_reserved_charged_and_confirmed(user, payments, catalog):
    order, saga = checkout(user, "BOOK-1", 2)

    order.refresh_from_db()
    assert saga.state == "completed"
    assert (order.status, order.cancel_reason) == ("confirmed", "")
    assert stock("BOOK-1") == 1000 - 2
    payment = Payment.objects.get(order=order)
    [charge] = payments.charges()
    assert charge["id"] == payment.provider_charge_id and charge["key"] == payment.idempotency_key
    assert (charge["amount_cents"], charge["currency"], charge["order_id"]) == (2 * catalog["BOOK-1"], "EUR", order.pk)
    assert (payment.status, payment.amount_cents) == ("charged", 2500)
    assert published("order.confirmed") == [{"order_id": order.pk}]
    assert Reservation.objects.get(order=order).released_at is None


def test_short_stock_cancels_out_of_stock_without_charging(user, payments):
    Product.objects.filter(sku="PEN-1").update(stock=1)

    order, saga = checkout(user, "PEN-1", 2)

    order.refresh_from_db()
    assert saga.state == "compensated"
    assert (order.status, order.cancel_reason) == ("cancelled", "out_of_stock")
    assert stock("PEN-1") == 1
    assert payments.requests == [] and not Payment.objects.exists()
    assert published("order.cancelled") == [{"order_id": order.pk, "reason": "out_of_stock"}]


def test_a_decline_cancels_and_releases_the_stock(user, payments):
    order, saga = checkout(user, "GIFT-13", 1)

    order.refresh_from_db()
    assert saga.state == "compensated"
    assert (order.status, order.cancel_reason) == ("cancelled", "payment_declined")
    assert stock("GIFT-13") == 1000
    assert Reservation.objects.get(order=order).released_at is not None
    assert Payment.objects.get(order=order).status == "declined"
    assert len(_keys(payments, "charges")) == 1, "a decline is not retried"
    assert _keys(payments, "refunds") == []


def test_transient_failures_are_retried_with_the_same_key_then_succeed(user, payments):
    payments.fail_next("charges", 503, 500, 429)

    _, saga = checkout(user, "BOOK-1", 1)

    assert saga.state == "completed"
    keys = _keys(payments, "charges")
    assert len(keys) == 4 and len(set(keys)) == 1, "every attempt sends the step's one Idempotency-Key"
    assert len(payments.charges()) == 1


def test_a_provider_that_keeps_failing_cancels_payment_failed_and_releases(user, payments, settings):
    payments.fail_next("charges", *[503] * 10)

    order, saga = checkout(user, "BOOK-1", 3)

    order.refresh_from_db()
    assert saga.state == "compensated"
    assert (order.status, order.cancel_reason) == ("cancelled", "payment_failed")
    assert len(_keys(payments, "charges")) == 5  # PAYMENTS_CHARGE_MAX_ATTEMPTS
    assert stock("BOOK-1") == 1000
    assert Payment.objects.get(order=order).status == "pending" and _keys(payments, "refunds") == []


def test_a_charge_whose_answer_timed_out_is_refunded_when_the_checkout_fails(user, payments):
    """The provider charged but the answer came too late; the later attempts failed: the refund finds it."""
    payments.delay_next("charges", 2.0)  # longer than PAYMENTS_TIMEOUT_SECONDS (1 s): a read timeout
    order, saga = checkout(user, "BOOK-1", 1, steps=3)  # reserve, payment, charge attempt 1 (timed out)
    assert Payment.objects.get(order=order).uncertain
    payments.fail_next("charges", 429, 429, 429, 429)  # not breaker failures: the refund's call gets through

    saga = run_scheduled(saga)

    order.refresh_from_db()
    assert (saga.state, order.status, order.cancel_reason) == ("compensated", "cancelled", "payment_failed")
    [charge] = payments.charges()
    [refund] = payments.refunds()
    assert refund["charge_id"] == charge["id"]
    assert Payment.objects.get(order=order).status == "refunded"
    assert stock("BOOK-1") == 1000


def test_an_order_over_the_threshold_waits_for_approval(user, payments, settings):
    settings.ORDERS_APPROVAL_THRESHOLD_CENTS = 2000
    order, saga = checkout(user, "BOOK-1", 2)  # 2500 cents
    assert saga.state == "running" and order.status == "pending"
    assert SagaStepAttempt.objects.get(instance=saga, kind="signal").state == "waiting"
    assert payments.requests == []

    call_command("order", "approve", str(order.pk), "--reason", "known customer")
    deliver_published(APPROVAL, f"sagas.signal:{APPROVAL}")
    saga = run_scheduled(saga)

    order.refresh_from_db()
    assert (saga.state, order.status) == ("completed", "confirmed")
    assert saga.context["approved_by"].startswith("cli:")
    audit = OperatorAction.objects.get(action="order.approve")
    assert (audit.target_id, audit.reason, audit.via) == (str(order.pk), "known customer", "cli")
    with pytest.raises(CommandError, match="not waiting for approval"):
        call_command("order", "approve", str(order.pk))


def test_an_order_nobody_approves_is_cancelled_approval_timeout(user, payments, settings):
    settings.ORDERS_APPROVAL_THRESHOLD_CENTS = 1
    order, saga = checkout(user, "PEN-1", 1)

    expire_open_attempts(saga)
    assert saga_sweep()["timed_out"] == 1
    saga = run_scheduled(saga)

    order.refresh_from_db()
    assert saga.state == "compensated"
    assert (order.status, order.cancel_reason) == ("cancelled", "approval_timeout")
    assert stock("PEN-1") == 1000 and payments.requests == []


def test_approving_an_unknown_order_fails(db):
    with pytest.raises(CommandError, match="not found"):
        call_command("order", "approve", "999999")


def test_an_operator_cancel_after_the_charge_refunds_and_releases(user, payments):
    order, saga = checkout(user, "BOOK-1", 4, steps=3)  # reserve, payment, charge: confirm not yet run
    assert Order.objects.get(pk=order.pk).status == "paid"

    saga_cancel(saga_id=saga.pk, actor=Actor(name="ana", via="api"), reason="customer called")
    saga = run_scheduled(saga)

    order.refresh_from_db()
    assert saga.state == "cancelled"
    assert (order.status, order.cancel_reason) == ("cancelled", "cancelled_by_operator")
    [charge] = payments.charges()
    [refund] = payments.refunds()
    assert refund["charge_id"] == charge["id"]
    payment = Payment.objects.get(order=order)
    assert (payment.status, payment.provider_refund_id) == ("refunded", refund["id"])
    assert stock("BOOK-1") == 1000
    assert published("order.cancelled") == [{"order_id": order.pk, "reason": "cancelled_by_operator"}]


def test_a_refund_failing_twice_is_retried_with_its_own_key(user, payments):
    order, saga = checkout(user, "BOOK-1", 1, steps=3)
    payments.fail_next("refunds", 500, 503)

    saga_cancel(saga_id=saga.pk, actor=Actor(name="ana", via="api"), reason="test")
    saga = run_scheduled(saga)

    assert saga.state == "cancelled"
    keys = _keys(payments, "refunds")
    assert len(keys) == 3 and len(set(keys)) == 1
    assert keys[0] != Payment.objects.get(order=order).idempotency_key
    assert len(payments.refunds()) == 1


def _admin(group: str) -> Client:
    client = Client()
    client.force_login(staff_member(group.rstrip("s"), group=group))
    return client


def test_operators_approve_in_admin_audited_and_viewers_cannot(user, payments, settings):
    settings.ORDERS_APPROVAL_THRESHOLD_CENTS = 1
    waiting, _ = checkout(user, "PEN-1", 1)
    other = Order.objects.create(owner=user, sku="BOOK-1", quantity=1)  # no checkout waits: refused, a warning
    action = {"action": "approve", "_selected_action": [waiting.pk, other.pk]}

    _admin(VIEWERS).post(ORDERS_CHANGELIST, action)
    assert not OperatorAction.objects.filter(action="order.approve").exists()

    response = _admin(OPERATORS).post(ORDERS_CHANGELIST, action, follow=True)

    notes = [str(message) for message in response.context["messages"]]
    assert "Approved 1 order(s); their checkout goes on." in notes
    assert any(f"Order {other.pk} is pending and not waiting for approval" in note for note in notes)
    audit = OperatorAction.objects.get(action="order.approve")
    assert (audit.target_id, audit.via, audit.actor) == (str(waiting.pk), "admin", "operator")
    assert OutboxMessage.objects.filter(name=APPROVAL, key=str(waiting.pk)).count() == 1
