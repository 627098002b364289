from django.conf import settings

from apps.core.task_contract import INBOX_PURGE, OUTBOX_DELIVER_EVENT, OUTBOX_PURGE, OUTBOX_RELAY
from apps.outbox.delivery import delivery_retry_key, event_deliver
from apps.outbox.services import inbox_purge, outbox_purge
from apps.outbox.serving import relay_serve
from workers.task import taskplane_task

_LEASE = settings.OUTBOX_RELAY_LEASE_SECONDS


# Periodic: beat's next tick starts a relay anyway, so a relay that fails is not retried through the
# outbox it drains (infrastructure errors are still redelivered; the tick's `expires` drops stale ones).
@taskplane_task(OUTBOX_RELAY, periodic=True, soft_time_limit=_LEASE + 30, time_limit=_LEASE + 60)
def relay() -> str:
    """Relay outbox rows for one lease, then hand over to a successor (beat restarts relays that die)."""
    outcome = relay_serve()
    if outcome in ("lease-ended", "database-unavailable"):
        # The successor goes out directly: it is the relay's own continuation, not business work. After a
        # lease spent waiting for the database it goes out too, so a worker without beat keeps relaying.
        relay.apply_async()
    return outcome


@taskplane_task(OUTBOX_DELIVER_EVENT, max_attempts=settings.OUTBOX_SUBSCRIBER_MAX_ATTEMPTS,
                retry_key=delivery_retry_key)
def deliver_event(subscriber: str, event: dict, attempt: int | None = None) -> str:
    """Run one subscriber for one event (inbox-deduplicated; failures retry through the outbox).

    ``attempt`` is accepted from retry rows written before the failure policy carried it in the
    message context; it is not used.
    """
    return event_deliver(subscriber=subscriber, event=event)


@taskplane_task(OUTBOX_PURGE, periodic=True)
def purge() -> int:
    """Delete published messages past retention, in batches."""
    return outbox_purge()


@taskplane_task(INBOX_PURGE, periodic=True)
def purge_inbox() -> int:
    """Delete inbox entries past OUTBOX_INBOX_RETENTION_DAYS, in batches."""
    return inbox_purge()
