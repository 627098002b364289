"""Flags the orders app evaluates (discovered by apps.flags at start-up, created by migrate if missing)."""

from apps.flags.declarations import declare_flag

# Lets operators hold checkouts for approval per user; evaluated when the orders.start_checkout
# subscriber starts the saga, with the placing request's context (carried in the outbox headers).
AUTO_RESERVE = declare_flag(
    "orders.auto-reserve", default=True, owner="orders",
    description="Check out orders at once when they are placed. Off: the checkout saga waits for an "
                "operator's approval (`manage.py order approve ID`, or the Orders admin action) and cancels "
                "the order (approval_timeout) after ORDERS_APPROVAL_TIMEOUT_SECONDS; a users/groups/percentage "
                "rule limits it to some users.",
)
