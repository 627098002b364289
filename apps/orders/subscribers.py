"""Event handlers of the orders app (discovered by apps.outbox at start-up)."""

from apps.orders.services import ORDER_PLACED, order_reserve
from apps.outbox import subscriber


@subscriber(ORDER_PLACED, name="orders.reserve_stock")
def reserve_stock(event: dict) -> None:
    order_reserve(event=event)
