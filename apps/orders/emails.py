"""Order emails: tell the owner when an order is confirmed or cancelled (owners with an address only).

Subscribers of the checkout saga's ``order.confirmed`` / ``order.cancelled`` events. Each runs in its
subscriber transaction (inbox-deduplicated) and asks for the email there, keyed by topic and order,
so a re-driven event still sends one email.
"""

from __future__ import annotations

from typing import Any

from apps.emails.services import notify_email
from apps.orders.models import Order
from apps.outbox import subscriber

ORDER_CONFIRMED = "order.confirmed"
ORDER_CANCELLED = "order.cancelled"
TEMPLATES = {ORDER_CONFIRMED: "order_confirmed", ORDER_CANCELLED: "order_cancelled"}


def order_email(*, event: dict[str, Any], topic: str) -> bool:
    """Ask for the ``topic`` email to the order's owner; False when the order or the owner's address is gone."""
    order_id = event["payload"]["order_id"]
    order = Order.objects.select_related("owner").filter(pk=order_id).first()
    if order is None or not order.owner.email:
        return False
    context = {"order_id": order.pk, "sku": order.sku, "quantity": order.quantity,
               "username": order.owner.get_username()}
    notify_email(order.owner.email, TEMPLATES[topic], context, key=f"{topic}:{order.pk}")
    return True


@subscriber(ORDER_CONFIRMED, name="orders.email_confirmed")
def email_order_confirmed(event: dict[str, Any]) -> None:
    order_email(event=event, topic=ORDER_CONFIRMED)


@subscriber(ORDER_CANCELLED, name="orders.email_cancelled")
def email_order_cancelled(event: dict[str, Any]) -> None:
    order_email(event=event, topic=ORDER_CANCELLED)
