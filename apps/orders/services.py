"""Order write services: place an order, start and end its checkout saga, and an operator's approval."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from apps.core.audit import Actor, operator_action_record
from apps.core.errors import Conflict, NotFound
from apps.flags.evaluation import get_details
from apps.orders.catalog import product_price_cents
from apps.orders.emails import ORDER_CANCELLED
from apps.orders.flags import AUTO_RESERVE
from apps.orders.models import Order
from apps.outbox import publish
from apps.sagas.models import SagaInstance
from apps.sagas.selectors import saga_last_failure, saga_waiting_for
from apps.sagas.services import saga_start

ORDER_PLACED = "order.placed"
CHECKOUT = "orders.checkout"
APPROVAL_TOPIC = "orders.manual-approval"  # the signal `order approve` publishes, keyed by the order id
Saga = SagaInstance.State


class CancelReason:
    """Why a checkout cancelled its order (``Order.cancel_reason``; docs/api.md lists them)."""

    OUT_OF_STOCK = "out_of_stock"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_FAILED = "payment_failed"
    APPROVAL_TIMEOUT = "approval_timeout"
    CANCELLED_BY_OPERATOR = "cancelled_by_operator"


def order_place(*, owner: AbstractBaseUser, sku: str, quantity: int) -> Order:
    """Place an order for ``owner`` at the current price and publish ``order.placed`` in the same transaction.

    A SKU that is not in the catalog raises UnknownSku before anything is written.
    """
    with transaction.atomic():
        amount_cents = quantity * product_price_cents(sku=sku)
        order = Order.objects.create(owner=owner, sku=sku, quantity=quantity, amount_cents=amount_cents)
        publish(ORDER_PLACED, {"order_id": order.pk, "sku": sku, "quantity": quantity, "owner_id": owner.pk,
                               "amount_cents": order.amount_cents},
                key=f"order:{order.pk}")
    return order


def order_needs_approval(*, amount_cents: int) -> bool:
    """True when the order waits for an operator: auto-reserve off for the placing request's context, or
    the amount at or above ORDERS_APPROVAL_THRESHOLD_CENTS (when set)."""
    threshold = settings.ORDERS_APPROVAL_THRESHOLD_CENTS
    if threshold and amount_cents >= threshold:
        return True
    return not get_details(AUTO_RESERVE.key, True).value


def order_checkout_start(*, event: dict[str, Any]) -> SagaInstance:
    """Start the ``orders.checkout`` saga for an ``order.placed`` event, in the subscriber's transaction (once)."""
    payload = event["payload"]
    order = Order.objects.filter(pk=payload["order_id"]).first()
    if order is None:
        raise NotFound(f"Order {payload['order_id']} no longer exists.")
    return saga_start(CHECKOUT, key=str(order.pk), input={
        "order_id": order.pk, "event_id": str(event["id"]),
        "needs_approval": order_needs_approval(amount_cents=order.amount_cents)})


def _cancel_reason(instance: SagaInstance) -> str:
    """What made the checkout compensate, from the attempt that failed (or the operator's cancel)."""
    if instance.state == Saga.CANCELLED or instance.cancel_requested:  # resolved by hand after a cancel, too
        return CancelReason.CANCELLED_BY_OPERATOR
    failed = saga_last_failure(instance=instance)
    if failed is not None and failed.kind == "signal":
        return CancelReason.APPROVAL_TIMEOUT
    if failed is not None and failed.step == "reserve":
        return CancelReason.OUT_OF_STOCK
    if failed is not None and failed.error.startswith("PaymentDeclined:"):  # the engine keeps "<class>: <message>"
        return CancelReason.PAYMENT_DECLINED
    return CancelReason.PAYMENT_FAILED


def order_checkout_ended(instance: SagaInstance) -> None:
    """The saga's on_end hook (in the transaction that ends it): a compensated checkout cancels its order."""
    if instance.state not in (Saga.COMPENSATED, Saga.CANCELLED):
        return  # completed: confirm already set the status; compensation_failed waits for an operator
    order_id = int(instance.key)
    reason = _cancel_reason(instance)
    cancelled = Order.objects.filter(pk=order_id).exclude(status=Order.Status.CANCELLED).update(
        status=Order.Status.CANCELLED, cancel_reason=reason)
    if cancelled == 1:
        publish(ORDER_CANCELLED, {"order_id": order_id, "reason": reason}, key=f"order:{order_id}")


def order_approve(*, order_id: int, actor: Actor, reason: str = "") -> Order:
    """Approve an order waiting for an operator: publish its approval signal, audited, in one transaction."""
    with transaction.atomic():
        order = Order.objects.filter(pk=order_id).first()
        if order is None:
            raise NotFound(f"Order {order_id} not found.")
        if not saga_waiting_for(name=CHECKOUT, key=str(order.pk), topic=APPROVAL_TOPIC):
            raise Conflict(f"Order {order.pk} is {order.status} and not waiting for approval.")
        publish(APPROVAL_TOPIC, {"approved_by": actor.name}, key=str(order.pk))
        operator_action_record(actor=actor, action="order.approve", target_type="orders.order",
                               target_ids=[order.pk], reason=reason, details={"sku": order.sku})
    return order
