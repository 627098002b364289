"""Read-side queries over the outbox for admin, API, commands and metrics."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from apps.outbox.models import OutboxMessage


def outbox_stats() -> dict:
    """Counts per status, age of the oldest pending message, and messages published in the last minute."""
    now = timezone.now()
    counts = {status: 0 for status in OutboxMessage.Status.values}
    for row in OutboxMessage.objects.values("status").annotate(n=Count("id")).order_by():
        counts[row["status"]] = row["n"]
    oldest = OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).aggregate(oldest=Min("created_at"))
    oldest_age = (now - oldest["oldest"]).total_seconds() if oldest["oldest"] else 0.0
    per_minute = OutboxMessage.objects.filter(
        status=OutboxMessage.Status.PUBLISHED, published_at__gte=now - timedelta(minutes=1)
    ).count()
    return {"counts": counts, "oldest_pending_age_seconds": round(oldest_age, 3), "published_last_minute": per_minute}


def outbox_messages(*, status: str | None = None, name: str | None = None, key: str | None = None,
                    kind: str | None = None) -> QuerySet[OutboxMessage]:
    """Messages filtered by status, topic/task name, key and kind; newest first."""
    queryset = OutboxMessage.objects.all().order_by("-id")
    if status:
        queryset = queryset.filter(status=status)
    if name:
        queryset = queryset.filter(name=name)
    if key:
        queryset = queryset.filter(key=key)
    if kind:
        queryset = queryset.filter(kind=kind)
    return queryset
