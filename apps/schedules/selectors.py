"""Schedule reads: lookups, fire history, previews and the summaries admin and the CLI show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import QuerySet

from apps.core.errors import NotFound
from apps.schedules.cadence import Cadence, Occurrence, cron_check, occurrences_list, zone_of
from apps.schedules.clock import database_now
from apps.schedules.errors import InvalidSchedule
from apps.schedules.models import Schedule, ScheduleFire


def schedule_get(*, name: str) -> Schedule:
    """The schedule named ``name``; NotFound if there is none."""
    schedule = Schedule.objects.filter(name=name).first()
    if schedule is None:
        raise NotFound(f"No schedule named {name!r}.")
    return schedule


def schedule_list() -> QuerySet[Schedule]:
    """Every schedule, by name."""
    return Schedule.objects.order_by("name")


def schedule_fires(*, name: str) -> QuerySet[ScheduleFire]:
    """The schedule's fire history, newest first."""
    return ScheduleFire.objects.filter(schedule=schedule_get(name=name)).order_by("-nominal_at", "-id")


def schedule_next_fires(*, schedule: Schedule, count: int = 5) -> list[Occurrence]:
    """The next ``count`` occurrences from its next undecided one (none while paused)."""
    if not schedule.enabled or schedule.next_fire_at is None:
        return []
    return occurrences_list(Cadence.of(schedule), after=schedule.next_fire_at - timedelta(microseconds=1), count=count)


def cron_preview(*, cron: str, timezone: str, start: datetime | None, count: int) -> list[datetime]:
    """The next ``count`` instants (UTC) of ``cron`` in ``timezone`` after ``start`` (default: now)."""
    errors = []
    try:
        cron_check(cron)
    except ValueError as exc:
        errors.append({"field": "cron", "message": str(exc), "code": "invalid"})
    try:
        zone_of(timezone)
    except ValueError as exc:
        errors.append({"field": "timezone", "message": str(exc), "code": "invalid"})
    if errors:
        raise InvalidSchedule("Cannot preview; see errors.", errors=errors)
    found = occurrences_list(Cadence(cron=cron, timezone=timezone), after=start or database_now(), count=count)
    return [occurrence.at for occurrence in found]


@dataclass(frozen=True)
class LastFire:
    """A schedule's most recent decided occurrence, for admin and the CLI."""

    nominal_at: datetime
    state: str
    decision: str
    lateness_seconds: float | None


def schedule_last_fire(*, schedule: Schedule) -> LastFire | None:
    """Its newest fire row, or None."""
    fire = schedule.fires.order_by("-nominal_at").first()
    if fire is None:
        return None
    return LastFire(fire.nominal_at, fire.state, fire.decision, fire.lateness_seconds)
