"""The event types endpoints subscribe to: the domain events Taskplane declares, plus ``webhook.test``."""

from __future__ import annotations

from collections.abc import Iterable

from apps.notifications.errors import InvalidEndpoint, field_error
from apps.orders.emails import ORDER_CANCELLED, ORDER_CONFIRMED
from apps.orders.services import ORDER_PLACED

WEBHOOK_TEST = "webhook.test"
# Each domain event here gets a fan-out subscriber (apps/notifications/subscribers.py).
DOMAIN_EVENT_TYPES = {
    ORDER_PLACED: "An order was placed (order_id, sku, quantity, owner_id, amount_cents).",
    ORDER_CONFIRMED: "The checkout saga confirmed an order.",
    ORDER_CANCELLED: "The checkout saga cancelled an order.",
}
EVENT_TYPES = {**DOMAIN_EVENT_TYPES, WEBHOOK_TEST: "Sent on request by POST …/endpoints/{id}/test/."}
MAX_EVENT_TYPES = 50


def event_types_check(*, event_types: Iterable[str]) -> list[str]:
    """The de-duplicated list, or InvalidEndpoint naming each entry that is neither a known type nor a known ``x.*``."""
    cleaned = list(dict.fromkeys(event_types))
    if len(cleaned) > MAX_EVENT_TYPES:
        raise InvalidEndpoint(f"An endpoint subscribes to at most {MAX_EVENT_TYPES} event types.")
    unknown = [item for item in cleaned if not isinstance(item, str) or not _known(item)]
    if unknown:
        raise InvalidEndpoint(
            f"Unknown event type(s) or pattern(s): {', '.join(map(str, unknown))}. Known types: "
            f"{', '.join(sorted(EVENT_TYPES))}; a pattern is a prefix followed by .* (e.g. order.*).",
            errors=[field_error("event_types", f"{item!r} matches no event type.") for item in unknown])
    return cleaned


def event_type_matches(*, event_types: list[str], topic: str) -> bool:
    """Whether an endpoint subscribed to ``event_types`` (empty = all) receives ``topic``."""
    return not event_types or any(_match(pattern, topic) for pattern in event_types)


def _match(pattern: str, topic: str) -> bool:
    if pattern.endswith(".*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


def _known(item: str) -> bool:
    # A pattern must match at least one declared type: a typo ("ordr.*") would silently receive nothing.
    return item in EVENT_TYPES or (item.endswith(".*") and any(_match(item, topic) for topic in EVENT_TYPES))
