"""Webhook tasks: one attempt of one delivery."""

from django.conf import settings

from apps.core.task_contract import WEBHOOKS_DELIVER
from apps.notifications.delivery import delivery_attempt
from workers.task import taskplane_task


# Time limits just past one attempt's HTTP budget; the claim's lease outlasts the hard limit.
@taskplane_task(WEBHOOKS_DELIVER, soft_time_limit=settings.WEBHOOKS_TIMEOUT_SECONDS + 30,
                time_limit=settings.WEBHOOKS_TIMEOUT_SECONDS + 60)
def deliver(delivery_id: int) -> str:
    """Attempt one webhook delivery if due (a redelivery finds it claimed, done or not due and does nothing)."""
    return delivery_attempt(delivery_id=int(delivery_id))
