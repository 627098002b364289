from django.conf import settings

from apps.core.task_contract import OUTBOX_DELIVER_EVENT, OUTBOX_PURGE, OUTBOX_RELAY
from apps.outbox.delivery import event_deliver
from apps.outbox.services import outbox_purge
from apps.outbox.serving import relay_serve
from workers.task import taskplane_task

_LEASE = settings.OUTBOX_RELAY_LEASE_SECONDS


@taskplane_task(OUTBOX_RELAY, soft_time_limit=_LEASE + 30, time_limit=_LEASE + 60)
def relay() -> str:
    """Relay outbox rows for one lease, then hand over to a successor (beat restarts relays that die)."""
    outcome = relay_serve()
    if outcome in ("lease-ended", "database-unavailable"):
        # The successor goes out directly: it is the relay's own continuation, not business work. After a
        # lease spent waiting for the database it goes out too, so a worker without beat keeps relaying.
        relay.apply_async()
    return outcome


@taskplane_task(OUTBOX_DELIVER_EVENT)
def deliver_event(subscriber: str, event: dict, attempt: int = 1) -> str:
    """Run one subscriber for one event (inbox-deduplicated; failures are retried via the outbox)."""
    return event_deliver(subscriber=subscriber, event=event, attempt=attempt)


@taskplane_task(OUTBOX_PURGE)
def purge() -> int:
    """Delete published messages past retention, in batches."""
    return outbox_purge()
