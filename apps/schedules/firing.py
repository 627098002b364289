"""The firing loop's transaction: claim due schedules, decide and record each occurrence, enqueue, advance.

Claiming (FOR UPDATE SKIP LOCKED on the due index), inserting the fire rows, writing their task rows
to the outbox and advancing ``next_fire_at`` commit together or not at all. The decisions of a claim
are written together at its end (apps/schedules/fire_batch.py): one INSERT of the fire rows, one
``enqueue_many`` of their task rows, one UPDATE of ``next_fire_at``. A second beat (or an
overlapping tick) skips the locked rows and, once they commit, no longer finds them due; the unique
``(schedule, nominal_at)`` stops anything else. Every time comes from the database clock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from apps.outbox.errors import OutboxError
from apps.outbox.writing import Dispatch, dispatch_check
from apps.schedules import metrics
from apps.schedules.cadence import Cadence, Occurrence, occurrences
from apps.schedules.clock import database_now
from apps.schedules.fire_batch import FireBatch
from apps.schedules.models import Schedule, ScheduleFire

logger = logging.getLogger(__name__)
State, Decision = ScheduleFire.State, ScheduleFire.Decision
_MICRO = timedelta(microseconds=1)


@dataclass
class FiringReport:
    """What one pass decided."""

    schedules: int = 0
    enqueued: int = 0
    buffered: int = 0
    skipped: int = 0
    missed: int = 0

    def add(self, state: str) -> None:
        """Count one decided occurrence."""
        if state in (State.ENQUEUED, State.BUFFERED, State.SKIPPED, State.MISSED):
            setattr(self, state, getattr(self, state) + 1)


@dataclass
class OpenFires:
    """A schedule's unfinished fires, read under its row lock.

    ``buffered`` holds fire ids, and None for a fire buffered in this claim (its row is written at
    the claim's end; only the count of those matters until then).
    """

    active: int
    buffered: list[int | None]


def schedules_fire_due(*, now: datetime | None = None, batch_size: int | None = None) -> FiringReport:
    """Fire every due occurrence of up to ``batch_size`` due schedules, in one transaction.

    ``now`` replaces the database clock (tests drive DST transitions with it).
    """
    report = FiringReport()
    started = time.perf_counter()
    with transaction.atomic():
        at = database_now() if now is None else now
        due = list(Schedule.objects.select_for_update(skip_locked=True, of=("self",))
                   .filter(enabled=True, next_fire_at__isnull=False, next_fire_at__lte=at)
                   .order_by("next_fire_at")[: batch_size or settings.SCHEDULES_BATCH_SIZE])
        open_fires = open_fires_by_schedule(
            [schedule.pk for schedule in due if schedule.overlap != Schedule.Overlap.ALLOW_ALL], now=at)
        batch = FireBatch(now=at)
        advanced = []
        for schedule in due:
            try:  # one schedule the outbox refuses must not stop the others
                dispatch_check(Dispatch(schedule.task, schedule.args, schedule.kwargs, key=schedule.ordering_key))
            except OutboxError as exc:
                _pause_refused(schedule, exc, at)
                continue
            advanced.append((schedule.pk, _decide_due(schedule, at, open_fires.get(schedule.pk), batch)))
        for fire in batch.write():
            report.add(fire.state)
        _advance(advanced)
        report.schedules = len(due)
    metrics.TICK_SECONDS.observe(time.perf_counter() - started)
    return report


def _pause_refused(schedule: Schedule, exc: OutboxError, now: datetime) -> None:
    # E.g. its task left the contract after it was created: firing it again would fail the same way.
    logger.error("Schedule %s paused: the outbox refused its task row: %s", schedule.name, exc)
    Schedule.objects.filter(pk=schedule.pk).update(enabled=False, note=f"Paused by the firing loop: {exc}"[:2000],
                                                   updated_at=now, version=schedule.version + 1)


def seconds_until_next_due(*, now: datetime | None = None) -> float | None:
    """Seconds from now (database clock) to the earliest next fire of an enabled schedule; None if none."""
    row = (Schedule.objects.filter(enabled=True, next_fire_at__isnull=False)
           .order_by("next_fire_at").values_list("next_fire_at", flat=True).first())
    if row is None:
        return None
    return (row - (database_now() if now is None else now)).total_seconds()


def _advance(advanced: list[tuple[int, datetime | None]]) -> None:
    """Set every claimed schedule's next_fire_at in one statement (a claim may hold hundreds)."""
    if not advanced:
        return
    if connection.vendor != "postgresql":
        for pk, next_at in advanced:
            Schedule.objects.filter(pk=pk).update(next_fire_at=next_at)
        return
    table = Schedule._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS s SET next_fire_at = v.next_at FROM "  # noqa: S608
            "unnest(%s::bigint[], %s::timestamptz[]) AS v(id, next_at) WHERE s.id = v.id",
            [[pk for pk, _ in advanced], [next_at for _, next_at in advanced]],
        )


def _decide_due(schedule: Schedule, now: datetime, open_fires: OpenFires | None, batch: FireBatch) -> datetime | None:
    """Decide every due occurrence of ``schedule`` into ``batch``; returns its new next_fire_at (see ``_advance``).

    ``open_fires`` is None under ``allow_all`` (nothing to wait for, so they were not read).
    """
    cadence = Cadence.of(schedule)
    catchup_from = now - timedelta(seconds=schedule.catchup_window_seconds)
    if open_fires is not None:
        release_buffered(schedule, open_fires, batch=batch)
    missed: list[Occurrence] = []
    upcoming = occurrences(cadence, after=schedule.next_fire_at - _MICRO)
    following = None
    for decided, occurrence in enumerate(upcoming):
        if occurrence.at > now or decided >= settings.SCHEDULES_MAX_OCCURRENCES_PER_CLAIM:
            following = occurrence
            break
        if occurrence.at < catchup_from:
            missed.append(occurrence)
            continue
        decision = Decision.SHIFTED if occurrence.shifted else Decision.FIRED
        fire_decide(schedule, nominal_at=occurrence.at, decision=decision, open_fires=open_fires, batch=batch)
    if missed:
        _record_missed(schedule, missed, batch)
    schedule.next_fire_at = following.at if following else None
    return schedule.next_fire_at


def open_fires_of(schedule: Schedule, *, now: datetime) -> OpenFires:
    """The schedule's enqueued/running fires (not stale) and its buffered ones, oldest first."""
    return open_fires_by_schedule([schedule.pk], now=now)[schedule.pk]


def open_fires_by_schedule(schedule_ids: list[int], *, now: datetime) -> dict[int, OpenFires]:
    """``open_fires_of`` for many schedules in one query (a claim holds hundreds)."""
    stale_before = now - timedelta(seconds=settings.SCHEDULES_FIRE_STALE_SECONDS)
    fires = {schedule_id: OpenFires(active=0, buffered=[]) for schedule_id in schedule_ids}
    if not schedule_ids:
        return fires
    rows = (ScheduleFire.objects
            .filter(schedule_id__in=schedule_ids, state__in=[State.BUFFERED, *ScheduleFire.ACTIVE_STATES])
            .order_by("nominal_at").values_list("schedule_id", "pk", "state", "decided_at"))
    for schedule_id, pk, state, decided_at in rows:
        if state == State.BUFFERED:
            fires[schedule_id].buffered.append(pk)
        elif decided_at >= stale_before:
            fires[schedule_id].active += 1
    return fires


def release_buffered(schedule: Schedule, open_fires: OpenFires, *, batch: FireBatch) -> None:
    """With nothing active, dispatch the oldest buffered fire (the caller holds the schedule's row lock)."""
    if open_fires.active or not open_fires.buffered:
        return
    batch.release(schedule, ScheduleFire.objects.get(pk=open_fires.buffered.pop(0)))
    open_fires.active += 1


def fire_decide(schedule: Schedule, *, nominal_at: datetime, decision: str, open_fires: OpenFires | None,
                batch: FireBatch, overlap: str | None = None) -> str:
    """Decide one occurrence under the overlap policy (None: no policy, always enqueue) into ``batch``.

    Returns its state. The row is written by ``batch.write()``; an occurrence that already has a row
    writes nothing then (in a claim that only happens when run now or a backfill took the instant).
    """
    state = _overlap_state(overlap or schedule.overlap, open_fires)
    batch.record(schedule, nominal_at=nominal_at, decision=decision, state=state)
    _count_open(open_fires, state, None)
    return state


def _count_open(open_fires: OpenFires | None, state: str, fire_id: int | None) -> None:
    if open_fires is not None:
        if state == State.ENQUEUED:
            open_fires.active += 1
        elif state == State.BUFFERED:
            open_fires.buffered.append(fire_id)


def fire_record(schedule: Schedule, *, nominal_at: datetime, decision: str, now: datetime,
                open_fires: OpenFires | None, overlap: str | None = None, replace_missed: bool = False) -> str | None:
    """Record and write one occurrence at once (run now, backfill); returns its state.

    Returns None when the occurrence already has a row; with ``replace_missed`` (backfill) a row
    recorded as missed is decided again instead.
    """
    batch = FireBatch(now=now)
    state = _overlap_state(overlap or schedule.overlap, open_fires)
    batch.record(schedule, nominal_at=nominal_at, decision=decision, state=state)
    inserted = batch.write()
    fire_id = inserted[0].fire_id if inserted else None
    if fire_id is None and replace_missed:
        fire_id = _redecide_missed(schedule, nominal_at, decision, state, batch)
    if fire_id is None:
        return None
    _count_open(open_fires, state, fire_id)
    return state


def _overlap_state(overlap: str, open_fires: OpenFires | None) -> str:
    if open_fires is None or overlap == Schedule.Overlap.ALLOW_ALL:
        return State.ENQUEUED
    if not open_fires.active and not open_fires.buffered:
        return State.ENQUEUED
    if overlap == Schedule.Overlap.SKIP:
        return State.SKIPPED
    if overlap == Schedule.Overlap.BUFFER_ONE:
        return State.SKIPPED if open_fires.buffered else State.BUFFERED
    return State.BUFFERED


def _redecide_missed(schedule: Schedule, nominal_at: datetime, decision: str, state: str,
                     batch: FireBatch) -> int | None:
    fire = (ScheduleFire.objects.select_for_update()
            .filter(schedule_id=schedule.pk, nominal_at=nominal_at, state=State.MISSED).first())
    if fire is None:
        return None
    ScheduleFire.objects.filter(pk=fire.pk, state=State.MISSED).update(decision=decision, state=state,
                                                                      decided_at=batch.now)
    if state == State.ENQUEUED:
        batch.release(schedule, fire)
        batch.write()
    metrics.FIRES.labels(schedule.name, state).inc()
    return fire.pk


def _record_missed(schedule: Schedule, missed: list[Occurrence], batch: FireBatch) -> None:
    for occurrence in missed:
        batch.record(schedule, nominal_at=occurrence.at, decision=Decision.MISSED, state=State.MISSED)
    metrics.MISSED.labels(schedule.name).inc(len(missed))
    logger.warning("Schedule %s: %d occurrence(s) from %s to %s were older than its catch-up window (%ss); "
                   "recorded as missed", schedule.name, len(missed), missed[0].at.isoformat(),
                   missed[-1].at.isoformat(), schedule.catchup_window_seconds)
