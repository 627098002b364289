"""The beat schedule. Every entry must expire, so a backlog never replays stale periodic work."""

from django.conf import settings

from apps.core.task_contract import HEARTBEAT

BEAT_SCHEDULE = {
    "core-heartbeat": {
        "task": HEARTBEAT,
        "schedule": float(settings.HEARTBEAT_SECONDS),
        # A heartbeat older than its interval says nothing; let the broker drop it.
        "options": {"expires": settings.HEARTBEAT_SECONDS},
    },
}

_missing_expiry = [name for name, entry in BEAT_SCHEDULE.items() if "expires" not in entry.get("options", {})]
if _missing_expiry:
    raise RuntimeError(f"Beat entries without 'expires': {_missing_expiry}")
