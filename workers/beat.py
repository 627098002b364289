"""The beat schedule. Every entry must expire, so a backlog never replays stale periodic work."""

from django.conf import settings

from apps.core.task_contract import (
    EMAILS_PURGE,
    FLAGS_APPLY_SCHEDULED,
    HEARTBEAT,
    IDEMPOTENCY_PURGE,
    INBOX_PURGE,
    OUTBOX_PURGE,
    OUTBOX_RELAY,
    SAGAS_SWEEP,
    SCHEDULES_PURGE,
    WEBHOOKS_PURGE,
)

BEAT_SCHEDULE = {
    "core-heartbeat": {
        "task": HEARTBEAT,
        "schedule": float(settings.HEARTBEAT_SECONDS),
        # A heartbeat older than its interval says nothing; let the broker drop it.
        "options": {"expires": settings.HEARTBEAT_SECONDS},
    },
    # Keeps a relay alive: a tick finding every slot taken ends at once; one finding a free slot
    # (its relay died) starts a replacement.
    "outbox-relay": {
        "task": OUTBOX_RELAY,
        "schedule": float(settings.OUTBOX_RELAY_TICK_SECONDS),
        "options": {"expires": settings.OUTBOX_RELAY_TICK_SECONDS},
    },
    "idempotency-purge": {
        "task": IDEMPOTENCY_PURGE,
        "schedule": 600.0,
        "options": {"expires": 300},
    },
    "outbox-purge": {
        "task": OUTBOX_PURGE,
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
    "outbox-inbox-purge": {
        "task": INBOX_PURGE,
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
    # Scheduled flag changes ("50% at 09:00") land within this interval of their run_at.
    "flags-apply-scheduled": {
        "task": FLAGS_APPLY_SCHEDULED,
        "schedule": 30.0,
        "options": {"expires": 30},
    },
    # Sagas: steps whose task was lost or whose timeout passed are re-dispatched or failed (docs/sagas.md).
    "sagas-sweep": {
        "task": SAGAS_SWEEP,
        "schedule": float(settings.SAGAS_SWEEP_SECONDS),
        "options": {"expires": settings.SAGAS_SWEEP_SECONDS},
    },
    # Old schedule fire rows (SCHEDULES_FIRE_RETENTION_DAYS); the schedules themselves fire from the
    # database (workers/schedule_beat.py), not from this table.
    "schedules-purge": {
        "task": SCHEDULES_PURGE,
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
    # Sent emails past EMAILS_RETENTION_DAYS (docs/emails.md).
    "emails-purge": {
        "task": EMAILS_PURGE,
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
    # Webhook messages (with their deliveries and attempts) past WEBHOOKS_RETENTION_DAYS (docs/notifications.md).
    "webhooks-purge": {
        "task": WEBHOOKS_PURGE,
        "schedule": 3600.0,
        "options": {"expires": 1800},
    },
}

_missing_expiry = [name for name, entry in BEAT_SCHEDULE.items() if "expires" not in entry.get("options", {})]
if _missing_expiry:
    raise RuntimeError(f"Beat entries without 'expires': {_missing_expiry}")
