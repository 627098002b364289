"""Event handlers of the orders app (discovered by apps.outbox at start-up)."""

import apps.orders.emails  # noqa: F401 - its subscribers (the owner's order emails) register on import
from apps.flags.tasks_support import flag_gated_subscriber
from apps.orders.services import ORDER_PLACED, order_reserve
from apps.outbox import subscriber

# Lets operators stop (or roll out) automatic reservation per user; on when the flag does not exist.
AUTO_RESERVE_FLAG = "orders.auto-reserve"
RESERVE_STOCK = "orders.reserve_stock"


# The flag is evaluated for the placing request's context, carried through the outbox headers. While it
# is off the event is skipped (logged and counted); re-drive it to this subscriber once it is on.
@subscriber(ORDER_PLACED, name=RESERVE_STOCK)
@flag_gated_subscriber(AUTO_RESERVE_FLAG, subscriber=RESERVE_STOCK, default=True)
def reserve_stock(event: dict) -> None:
    order_reserve(event=event)
