"""Order write services."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from apps.core.errors import NotFound
from apps.orders.catalog import product_price_cents
from apps.orders.models import Order, Reservation
from apps.outbox import publish

ORDER_PLACED = "order.placed"


def order_place(*, owner: AbstractBaseUser, sku: str, quantity: int) -> Order:
    """Place an order for ``owner`` at the current price and publish ``order.placed`` in the same transaction."""
    with transaction.atomic():
        order = Order.objects.create(owner=owner, sku=sku, quantity=quantity,
                                     amount_cents=quantity * product_price_cents(sku=sku))
        publish(ORDER_PLACED, {"order_id": order.pk, "sku": sku, "quantity": quantity, "owner_id": owner.pk,
                               "amount_cents": order.amount_cents},
                key=f"order:{order.pk}")
    return order


def order_reserve(*, event: dict[str, Any]) -> Reservation:
    """Reserve stock for the order named by an ``order.placed`` event, once (runs in the subscriber's transaction)."""
    payload = event["payload"]
    order = Order.objects.select_for_update().filter(pk=payload["order_id"]).first()
    if order is None:
        raise NotFound(f"Order {payload['order_id']} no longer exists.")
    existing = Reservation.objects.filter(order=order).first()
    if existing is not None:  # the event ran before (e.g. re-driven by an operator): reserve only once
        return existing
    reservation = Reservation.objects.create(
        order=order, sku=payload["sku"], quantity=payload["quantity"], event_id=event["id"]
    )
    order.status = Order.Status.RESERVED
    order.save(update_fields=["status"])
    return reservation
