"""Webhook tasks: one attempt of one delivery, and the purge of old messages."""

from django.conf import settings

from apps.core.task_contract import WEBHOOKS_DELIVER, WEBHOOKS_PURGE
from apps.notifications.delivery import delivery_attempt
from apps.notifications.services import webhook_messages_purge
from workers.task import taskplane_task


# Time limits just past one attempt's HTTP budget; the claim's lease outlasts the hard limit.
@taskplane_task(WEBHOOKS_DELIVER, soft_time_limit=settings.WEBHOOKS_TIMEOUT_SECONDS + 30,
                time_limit=settings.WEBHOOKS_TIMEOUT_SECONDS + 60)
def deliver(delivery_id: int) -> str:
    """Attempt one webhook delivery if due (a redelivery finds it claimed, done or not due and does nothing)."""
    return delivery_attempt(delivery_id=int(delivery_id))


@taskplane_task(WEBHOOKS_PURGE, periodic=True)
def purge() -> int:
    """Delete webhook messages past WEBHOOKS_RETENTION_DAYS (none with a delivery in flight), in batches."""
    return webhook_messages_purge()
