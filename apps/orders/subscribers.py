"""Event handlers of the orders app (discovered by apps.outbox at start-up)."""

from apps.flags import get_value
from apps.orders.services import ORDER_PLACED, order_reserve
from apps.outbox import subscriber

# Lets operators stop (or roll out) automatic reservation per user; on when the flag does not exist.
AUTO_RESERVE_FLAG = "orders.auto-reserve"


@subscriber(ORDER_PLACED, name="orders.reserve_stock")
def reserve_stock(event: dict) -> None:
    # No explicit context: in a task it is the placing request's, carried through the outbox headers.
    if get_value(AUTO_RESERVE_FLAG, True):
        order_reserve(event=event)
