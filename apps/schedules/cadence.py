"""When a schedule fires: the one place that turns a cron, an interval or a run-at into instants.

The firing loop, the preview endpoint, admin's "next 5 fires" and backfill all call ``occurrences``,
so what an operator previews is what fires. Cron is evaluated by cronsim in the schedule's IANA zone
(zoneinfo): a local time swallowed by a spring-forward gap fires once at the first instant after the
gap; a local time that occurs twice at fall-back fires once, at its first occurrence; expressions
whose minute or hour field is a wildcard or step (``*/15 * * * *``, ``0 * * * *``) fire on every real
boundary through the change. docs/schedules.md has the comparison with croniter that chose cronsim.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True)
class Occurrence:
    """One nominal fire instant (UTC); ``shifted`` when DST moved it off the expression's local time."""

    at: datetime
    shifted: bool = False


@dataclass(frozen=True)
class Cadence:
    """The fields of a schedule that decide its instants."""

    cron: str = ""
    timezone: str = "UTC"
    interval_seconds: int | None = None
    run_at: datetime | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    anchor_at: datetime | None = None

    @classmethod
    def of(cls, schedule) -> Cadence:
        """The cadence of a Schedule row."""
        return cls(cron=schedule.cron, timezone=schedule.timezone, interval_seconds=schedule.interval_seconds,
                   run_at=schedule.run_at, start_at=schedule.start_at, end_at=schedule.end_at,
                   anchor_at=schedule.anchor_at)


def zone_of(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError if unknown."""
    if not isinstance(name, str) or name not in _zones():
        raise ValueError(f"Unknown time zone {name!r}; use an IANA name such as Europe/Berlin.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"Unknown time zone {name!r}.") from exc


_zone_names: frozenset[str] | None = None


def _zones() -> frozenset[str]:
    global _zone_names
    if _zone_names is None:
        _zone_names = frozenset(available_timezones()) | {"UTC"}
    return _zone_names


def cron_check(expr: str) -> None:
    """Raise ValueError unless ``expr`` is a cron expression of 5 fields (or 6, seconds first)."""
    if not isinstance(expr, str) or len(expr.split()) not in (5, 6):
        raise ValueError("A cron expression has 5 fields (minute hour day month weekday), or 6 with seconds first.")
    try:
        sim = CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC))
        next(sim)
    except (CronSimError, StopIteration) as exc:
        raise ValueError(f"Invalid cron expression {expr!r}: {exc or 'it never matches'}") from exc


def occurrences(cadence: Cadence, *, after: datetime) -> Iterator[Occurrence]:
    """The nominal instants strictly after ``after``, in order, within start_at..end_at (inclusive)."""
    if cadence.start_at is not None and cadence.start_at - _MICRO > after:
        after = cadence.start_at - _MICRO
    if cadence.cron:
        source = _cron_instants(cadence.cron, zone_of(cadence.timezone), after)
    elif cadence.interval_seconds:
        anchor = cadence.start_at or cadence.anchor_at or after
        source = _interval_instants(anchor, cadence.interval_seconds, after)
    elif cadence.run_at is not None:
        source = iter([Occurrence(cadence.run_at)] if cadence.run_at > after else [])
    else:
        source = iter(())
    for occurrence in source:
        if cadence.end_at is not None and occurrence.at > cadence.end_at:
            return
        yield occurrence


def occurrences_list(cadence: Cadence, *, after: datetime, count: int) -> list[Occurrence]:
    """The first ``count`` occurrences after ``after``."""
    found = []
    for occurrence in occurrences(cadence, after=after):
        if len(found) >= count:
            break
        found.append(occurrence)
    return found


def next_occurrence(cadence: Cadence, *, after: datetime) -> Occurrence | None:
    """The first occurrence after ``after``, or None if there is none."""
    return next(occurrences(cadence, after=after), None)


def _cron_instants(expr: str, zone: ZoneInfo, after: datetime) -> Iterator[Occurrence]:
    sim = CronSim(expr, after.astimezone(zone))
    for local in sim:
        local_time = local.astimezone(zone)
        # cronsim moves a time swallowed by a DST gap to the first instant after it.
        shifted = local_time.hour not in sim.hours or local_time.minute not in sim.minutes
        yield Occurrence(local.astimezone(UTC), shifted=shifted)


def _interval_instants(anchor: datetime, seconds: int, after: datetime) -> Iterator[Occurrence]:
    step = timedelta(seconds=seconds)
    if after < anchor:
        current = anchor
    else:
        current = anchor + step * ((after - anchor) // step + 1)
    while True:
        yield Occurrence(current)
        current += step
