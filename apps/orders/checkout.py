"""The checkout saga's step functions (declared in apps/orders/sagas.py; docs/sagas.md#the-checkout-saga).

Each receives the saga's StepContext; ``ctx.data`` holds the order id and what earlier steps returned.
Database-only steps run inside the saga's completion transaction (``in_transaction=True``), so their
writes happen exactly once. The payment steps call the provider outside any transaction and pass the
engine's stable per-step key as its Idempotency-Key, so a retried step is the same charge or refund.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now

from apps.orders.emails import ORDER_CONFIRMED
from apps.orders.models import Order, Payment, Product, Reservation
from apps.orders.payments import PaymentDeclined, PaymentUnavailable, payment_charge, payment_refund
from apps.outbox import publish
from apps.sagas.definitions import StepContext

Status = Order.Status


class OutOfStock(Exception):
    """The product has less stock than the order's quantity (or is gone from the catalog): cancel."""


def _order_id(ctx: StepContext) -> int:
    return int(ctx.data["order_id"])


def reserve_stock(ctx: StepContext) -> dict[str, Any]:
    """Take the order's quantity from the product's stock and record the reservation (in the saga's transaction)."""
    order = Order.objects.select_for_update().get(pk=_order_id(ctx))
    existing = Reservation.objects.filter(order=order).first()
    if existing is not None:
        return {"reservation_id": existing.pk}
    # Conditional decrement: two orders racing for the last items cannot both get them.
    taken = Product.objects.filter(sku=order.sku, stock__gte=order.quantity).update(
        stock=F("stock") - order.quantity)
    if taken != 1:
        raise OutOfStock(f"not enough stock of {order.sku!r} for {order.quantity}")
    reservation = Reservation.objects.create(order=order, sku=order.sku, quantity=order.quantity,
                                             event_id=ctx.data["event_id"])
    Order.objects.filter(pk=order.pk, status=Status.PENDING).update(status=Status.RESERVED)
    return {"reservation_id": reservation.pk}


def release_stock(ctx: StepContext) -> dict[str, Any]:
    """Give a reservation's stock back, once; nothing to do when it was never made (or already released)."""
    reservation = Reservation.objects.filter(order_id=_order_id(ctx), released_at__isnull=True).first()
    if reservation is None:
        return {}
    if Reservation.objects.filter(pk=reservation.pk, released_at__isnull=True).update(released_at=Now()) != 1:
        return {}
    Product.objects.filter(sku=reservation.sku).update(stock=F("stock") + reservation.quantity)
    return {"released": reservation.quantity}


def record_payment(ctx: StepContext) -> dict[str, Any]:
    """Record the payment about to be charged (in the saga's transaction), so its refund is registered
    before the provider is called: a charge whose answer was lost is refunded too."""
    order = Order.objects.get(pk=_order_id(ctx))
    payment, _ = Payment.objects.get_or_create(order=order, defaults={
        "amount_cents": order.amount_cents, "currency": settings.PAYMENTS_CURRENCY,
        # This step's stable key is the charge's Idempotency-Key: every charge attempt, and the refund's
        # replay of an uncertain charge, send the same one.
        "idempotency_key": ctx.idempotency_key})
    return {"payment_id": payment.pk}


def charge(ctx: StepContext) -> dict[str, Any]:
    """Charge the order at the provider (outside any transaction); 402 raises PaymentDeclined."""
    payment = Payment.objects.get(pk=ctx.data["payment_id"])
    if payment.status == Payment.Status.CHARGED:  # an earlier attempt got through but did not complete
        return {"charge_id": payment.provider_charge_id}
    try:
        charge_id = payment_charge(order_id=payment.order_id, amount_cents=payment.amount_cents,
                                   currency=payment.currency, idempotency_key=payment.idempotency_key)
    except PaymentDeclined:
        Payment.objects.filter(pk=payment.pk, status=Payment.Status.PENDING).update(status=Payment.Status.DECLINED)
        raise
    except PaymentUnavailable as exc:
        if exc.uncertain:
            Payment.objects.filter(pk=payment.pk).update(uncertain=True)
        raise
    with transaction.atomic():
        Payment.objects.filter(pk=payment.pk, status=Payment.Status.PENDING).update(
            status=Payment.Status.CHARGED, provider_charge_id=charge_id)
        Order.objects.filter(pk=payment.order_id, status=Status.RESERVED).update(status=Status.PAID)
    return {"charge_id": charge_id}


def refund(ctx: StepContext) -> dict[str, Any]:
    """Refund the order's charge, if there is (or may be) one; every failure is retried."""
    payment = Payment.objects.filter(order_id=_order_id(ctx)).first()
    if payment is None or payment.status in (Payment.Status.DECLINED, Payment.Status.REFUNDED):
        return {}
    charge_id = payment.provider_charge_id
    if payment.status == Payment.Status.PENDING:
        if not payment.uncertain:
            return {}  # every charge request was answered, none with a charge: nothing to give back
        try:  # the same key again: the provider answers with the charge it made (or declines), never a second
            charge_id = payment_charge(order_id=payment.order_id, amount_cents=payment.amount_cents,
                                       currency=payment.currency, idempotency_key=payment.idempotency_key)
        except PaymentDeclined:
            Payment.objects.filter(pk=payment.pk, status=Payment.Status.PENDING).update(
                status=Payment.Status.DECLINED)
            return {}
    refund_id = payment_refund(charge_id=charge_id, idempotency_key=ctx.idempotency_key)
    Payment.objects.filter(pk=payment.pk).exclude(status=Payment.Status.REFUNDED).update(
        status=Payment.Status.REFUNDED, provider_charge_id=charge_id, provider_refund_id=refund_id)
    return {"refund_id": refund_id}


def confirm(ctx: StepContext) -> dict[str, Any]:
    """The pivot: the order is confirmed and ``order.confirmed`` published (in the saga's transaction)."""
    order_id = _order_id(ctx)
    if Order.objects.filter(pk=order_id, status=Status.PAID).update(status=Status.CONFIRMED) == 1:
        publish(ORDER_CONFIRMED, {"order_id": order_id}, key=f"order:{order_id}")
    return {}
