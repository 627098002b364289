"""Event handlers of the orders app (discovered by apps.outbox at start-up)."""

import apps.orders.emails  # noqa: F401 - its subscribers (the owner's order emails) register on import
from apps.orders.services import ORDER_PLACED, order_checkout_start
from apps.outbox import subscriber

START_CHECKOUT = "orders.start_checkout"


# Runs in the inbox transaction: the saga instance and its first step's dispatch commit with the inbox
# row, and a redelivered (or re-driven) event finds the existing instance (one saga per order).
@subscriber(ORDER_PLACED, name=START_CHECKOUT)
def start_checkout(event: dict) -> None:
    order_checkout_start(event=event)
