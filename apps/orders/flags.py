"""Flags the orders app evaluates (discovered by apps.flags at start-up, created by migrate if missing)."""

from apps.flags.declarations import declare_flag

# Lets operators stop (or roll out) automatic reservation per user; evaluated by the
# orders.reserve_stock subscriber with the placing request's context.
AUTO_RESERVE = declare_flag(
    "orders.auto-reserve", default=True, owner="orders",
    description="Reserve stock automatically when an order is placed. Off: orders stay pending "
                "(the subscriber skips them); a users/groups/percentage rule limits it to some users.",
)
