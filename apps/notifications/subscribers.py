"""One fan-out subscriber per declared domain event type (discovered by apps.outbox at start-up)."""

from typing import Any

from apps.notifications.events import DOMAIN_EVENT_TYPES
from apps.notifications.fanout import webhook_fanout
from apps.outbox import subscriber


def fan_out(event: dict[str, Any]) -> None:
    webhook_fanout(event=event)


for _topic in DOMAIN_EVENT_TYPES:
    # The name is the inbox consumer: keep it stable (renaming re-delivers history).
    subscriber(_topic, name=f"notifications.webhooks.{_topic}")(fan_out)
