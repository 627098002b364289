"""Read-side queries over the outbox for admin, API, commands, health and metrics.

Ages and "due" are measured on the database clock (``Now()``), the clock the relay and the status rows use.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Min, QuerySet
from django.db.models.functions import Now

from apps.core.counting import DEFAULT_EXACT_COUNT_LIMIT, queryset_count
from apps.outbox.models import OutboxMessage, RelayStatus

# A relay slot's state: its last cycle succeeded, its last cycle failed, or nobody serves it any more.
RELAY_STATES = ("ok", "failing", "stopped")


def _seconds(age: timedelta | None) -> float | None:
    return None if age is None else round(max(0.0, age.total_seconds()), 3)


STATS_EXACT_LIMIT = DEFAULT_EXACT_COUNT_LIMIT  # counts above it are the planner's estimate


def outbox_stats() -> dict:
    """Counts per status, oldest pending age, last minute's throughput, and what the relays last did."""
    # Per status, exact up to a bound and the planner's estimate above it: a million retained rows must
    # not make every admin page load and stats call a full scan.
    by_status = {
        status: queryset_count(queryset=OutboxMessage.objects.filter(status=status), exact_limit=STATS_EXACT_LIMIT)
        for status in OutboxMessage.Status.values
    }
    counts = {status: count.value for status, count in by_status.items()}
    oldest = OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).aggregate(
        age=Now() - Min("created_at")
    )["age"]
    per_minute = OutboxMessage.objects.filter(
        status=OutboxMessage.Status.PUBLISHED, published_at__gte=Now() - timedelta(minutes=1)
    ).count()
    relays = relay_statuses()
    return {
        "counts": counts,
        "counts_estimated": sorted(status for status, count in by_status.items() if count.estimated),
        "oldest_pending_age_seconds": _seconds(oldest) or 0.0,
        "published_last_minute": per_minute,
        "unroutable_events": sum(relay["unroutable_events"] for relay in relays),
        "relay_problem": relay_problem(relays=relays),
        "relays": relays,
    }


def relay_statuses() -> list[dict[str, Any]]:
    """Each relay slot's status row with its state: "ok", "failing" (its last cycle failed) or "stopped"."""
    stall = settings.OUTBOX_RELAY_STALL_SECONDS
    rows = RelayStatus.objects.annotate(
        success_age=Now() - F("last_success_at"), error_age=Now() - F("last_error_at"),
        update_age=Now() - F("updated_at"),
    ).order_by("slot")
    statuses = []
    for row in rows:
        failing = row.last_error_at is not None and (
            row.last_success_at is None or row.last_error_at >= row.last_success_at
        )
        update_age = _seconds(row.update_age)
        # A serving relay writes about once a second, even idle; a row left alone that long has no holder.
        state = "stopped" if update_age is None or update_age > stall else "failing" if failing else "ok"
        statuses.append({
            "slot": row.slot, "holder": row.holder, "state": state, "started_at": row.started_at,
            "last_success_at": row.last_success_at, "last_success_age_seconds": _seconds(row.success_age),
            "last_error": row.last_error, "last_error_at": row.last_error_at,
            "last_error_age_seconds": _seconds(row.error_age), "error_count": row.error_count,
            "unroutable_events": row.unroutable_events, "last_unroutable_topic": row.last_unroutable_topic,
        })
    return statuses


def relay_problem(*, relays: list[dict[str, Any]] | None = None) -> str | None:
    """Why the relay is failing, or None: messages are due for OUTBOX_RELAY_STALL_SECONDS and no cycle succeeded."""
    stall = settings.OUTBOX_RELAY_STALL_SECONDS
    overdue = OutboxMessage.objects.filter(
        status=OutboxMessage.Status.PENDING, available_at__lte=Now() - timedelta(seconds=stall)
    )
    if not overdue.exists():
        return None
    relays = relay_statuses() if relays is None else relays
    successes = [relay["last_success_age_seconds"] for relay in relays if relay["last_success_at"] is not None]
    if successes and min(successes) <= stall:
        return None
    waiting = overdue.count()
    if not relays:
        return (f"No outbox relay has run while {waiting} message(s) have been due for over {stall} s: start a "
                "Celery worker that consumes the 'outbox' queue (it starts the relay; beat keeps it alive).")
    since = f"for {min(successes):.0f} s" if successes else "ever"
    problem = f"No outbox relay cycle has succeeded {since} while {waiting} message(s) have been due over {stall} s."
    errors = [relay for relay in relays if relay["last_error_at"] is not None]
    if errors:
        last = min(errors, key=lambda relay: relay["last_error_age_seconds"])
        problem += (f" Last error {last['last_error_age_seconds']:.0f} s ago on slot {last['slot']} "
                    f"({last['error_count']} failed cycle(s) in a row): {last['last_error'][:300]}")
    else:
        problem += " No relay is serving: is a worker consuming the 'outbox' queue running?"
    return problem


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
