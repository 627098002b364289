"""Schedule writes: create, edit, pause, resume, delete, run now, backfill; the workers' fire updates; purge.

Every operator write runs in one transaction with its audit row and the change signal (NOTIFY at
commit), so each firing loop sees it within its wake-up, not at its next restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from apps.core.audit import Actor, operator_action_record
from apps.core.errors import Conflict, NotFound
from apps.core.purging import delete_in_batches
from apps.schedules import metrics
from apps.schedules.cadence import Cadence, next_occurrence, occurrences
from apps.schedules.clock import database_now
from apps.schedules.errors import InvalidSchedule
from apps.schedules.fire_batch import FireBatch
from apps.schedules.firing import fire_record, open_fires_of, release_buffered
from apps.schedules.models import Schedule, ScheduleFire
from apps.schedules.signals import schedules_changed
from apps.schedules.validation import CADENCE_FIELDS, schedule_clean

logger = logging.getLogger(__name__)
State, Decision = ScheduleFire.State, ScheduleFire.Decision
TARGET = "schedule"


def schedule_create(*, data: Mapping[str, Any], actor: Actor) -> Schedule:
    """Create a schedule from ``data`` (API field names); InvalidInput with field errors, nothing saved."""
    fields = schedule_clean(data=data, current=None)
    with transaction.atomic():
        if Schedule.objects.filter(name=fields["name"]).exists():
            raise Conflict(f"A schedule named {fields['name']!r} exists; PATCH it or pick another name.")
        now = database_now()
        schedule = Schedule(**fields, anchor_at=now, created_at=now, updated_at=now)
        schedule.next_fire_at = _first_fire(schedule, now)
        schedule.save(force_insert=True)
        _audit(actor, "schedule.create", schedule, details={"cadence": schedule.cadence})
        schedules_changed()
    return schedule


def schedule_update(*, name: str, changes: Mapping[str, Any], actor: Actor) -> Schedule:
    """Change some fields; a changed cadence restarts it from now (database clock)."""
    with transaction.atomic():
        schedule = _locked(name)
        fields = schedule_clean(data=changes, current=schedule)
        now = database_now()
        changed = sorted(field for field, value in fields.items() if getattr(schedule, field) != value)
        for field, value in fields.items():
            setattr(schedule, field, value)
        if set(changed) & CADENCE_FIELDS:
            schedule.anchor_at = now
            schedule.next_fire_at = _first_fire(schedule, now)
        if "enabled" in changed and schedule.enabled:
            schedule.next_fire_at = _first_fire(schedule, now)
        schedule.version += 1
        schedule.updated_at = now
        schedule.save()
        _audit(actor, "schedule.update", schedule, reason=str(changes.get("note", "")), details={"fields": changed})
        schedules_changed()
    return schedule


def schedule_pause(*, name: str, note: str, actor: Actor) -> Schedule:
    """Stop firing (occurrences while paused are not fired, nor recorded); ``note`` says why."""
    return _set_enabled(name=name, enabled=False, note=note, actor=actor, action="schedule.pause")


def schedule_resume(*, name: str, note: str, actor: Actor) -> Schedule:
    """Fire again from the next occurrence after now."""
    return _set_enabled(name=name, enabled=True, note=note, actor=actor, action="schedule.resume")


def schedule_delete(*, name: str, actor: Actor) -> None:
    """Delete the schedule and its fire history (task rows already in the outbox still run)."""
    with transaction.atomic():
        schedule = _locked(name)
        _audit(actor, "schedule.delete", schedule, details={"cadence": schedule.cadence})
        schedule.delete()
        schedules_changed()


def schedule_trigger(*, name: str, actor: Actor) -> ScheduleFire:
    """Run now: an extra fire outside the cadence, recorded as manual (not held back by the overlap policy)."""
    with transaction.atomic():
        schedule = _locked(name)
        now = database_now()
        fire_record(schedule, nominal_at=now, decision=Decision.MANUAL, now=now, open_fires=None)
        _audit(actor, "schedule.trigger", schedule)
    return ScheduleFire.objects.get(schedule=schedule, nominal_at=now)


def schedule_backfill(*, name: str, start: datetime, end: datetime, actor: Actor,
                      overlap: str | None = None) -> dict[str, int]:
    """Fire every nominal time of ``start``..``end`` (a past range) once; times already fired are left alone.

    Occurrences recorded as missed are fired now. ``overlap`` (default: the schedule's) decides
    between the backfilled fires themselves. Returns how many were enqueued/buffered/skipped/existing.
    """
    if overlap is not None and overlap not in Schedule.Overlap.values:
        raise InvalidSchedule("Unknown overlap policy.", errors=[{"field": "overlap", "message": "Unknown policy."}])
    with transaction.atomic():
        schedule = _locked(name)
        now = database_now()
        if not start < end or end > now:
            raise InvalidSchedule("Backfill needs start < end <= now.",
                               errors=[{"field": "end", "message": "Must be after start and not in the future."}])
        instants = []
        for occurrence in occurrences(Cadence.of(schedule), after=start - timedelta(microseconds=1)):
            if occurrence.at > end:
                break
            instants.append(occurrence.at)
            if len(instants) > settings.SCHEDULES_BACKFILL_MAX:
                raise InvalidSchedule(f"The range holds more than {settings.SCHEDULES_BACKFILL_MAX} occurrences "
                                   "(SCHEDULES_BACKFILL_MAX); backfill it in parts.")
        counts = {State.ENQUEUED: 0, State.BUFFERED: 0, State.SKIPPED: 0, "existing": 0}
        open_fires = open_fires_of(schedule, now=now)
        for instant in instants:
            state = fire_record(schedule, nominal_at=instant, decision=Decision.BACKFILL, now=now,
                                open_fires=open_fires, overlap=overlap, replace_missed=True)
            counts[state or "existing"] += 1
        _audit(actor, "schedule.backfill", schedule,
               details={"start": start.isoformat(), "end": end.isoformat(), **{str(k): v for k, v in counts.items()}})
    return {str(key): value for key, value in counts.items()}


def fire_started(*, fire_id: int, task_id: str) -> bool:
    """A worker began the fire's task; False if the fire is gone or already finished."""
    return ScheduleFire.objects.filter(pk=fire_id, state__in=ScheduleFire.ACTIVE_STATES).update(
        state=State.RUNNING, started_at=Now(), task_id=task_id) == 1


def fire_finished(*, fire_id: int, state: str, error: str = "") -> bool:
    """Record how the fire's task ended (succeeded, failed, or enqueued again for a retry); release a buffered fire.

    A failure pauses a ``pause_on_failure`` schedule. Returns False if the fire was gone or not active.
    """
    schedule_id = ScheduleFire.objects.filter(pk=fire_id).values_list("schedule_id", flat=True).first()
    if schedule_id is None:
        return False
    with transaction.atomic():
        # The schedule's lock first, as the firing loop takes it: the two never deadlock.
        schedule = Schedule.objects.select_for_update().filter(pk=schedule_id).first()
        if schedule is None:
            return False
        finished = {"finished_at": Now()} if state in (State.SUCCEEDED, State.FAILED) else {}
        updated = ScheduleFire.objects.filter(pk=fire_id, state__in=ScheduleFire.ACTIVE_STATES).update(
            state=state, error=error[:2000], **finished)
        if not updated:
            return False
        now = database_now()
        if state == State.FAILED and schedule.pause_on_failure and schedule.enabled:
            Schedule.objects.filter(pk=schedule.pk).update(
                enabled=False, note=f"Paused: the fire {fire_id} failed ({error[:200]})", updated_at=now,
                version=schedule.version + 1)
            schedules_changed()
        if state in (State.SUCCEEDED, State.FAILED):
            batch = FireBatch(now=now)
            release_buffered(schedule, open_fires_of(schedule, now=now), batch=batch)
            batch.write()
            metrics.FIRES.labels(schedule.name, state).inc()
    return True


def schedule_fires_purge() -> int:
    """Delete finished fire rows older than SCHEDULES_FIRE_RETENTION_DAYS, in batches; returns how many."""
    cutoff = database_now() - timedelta(days=settings.SCHEDULES_FIRE_RETENTION_DAYS)
    old = ScheduleFire.objects.filter(decided_at__lt=cutoff).exclude(
        state__in=[State.BUFFERED, *ScheduleFire.ACTIVE_STATES])
    return delete_in_batches(old)


def _set_enabled(*, name: str, enabled: bool, note: str, actor: Actor, action: str) -> Schedule:
    with transaction.atomic():
        schedule = _locked(name)
        now = database_now()
        was = schedule.enabled
        schedule.enabled, schedule.note, schedule.updated_at = enabled, note, now
        if enabled and not was:
            schedule.next_fire_at = _first_fire(schedule, now)
        schedule.version += 1
        schedule.save(update_fields=["enabled", "note", "updated_at", "next_fire_at", "version"])
        _audit(actor, action, schedule, reason=note)
        schedules_changed()
    return schedule


def _first_fire(schedule: Schedule, now: datetime) -> datetime | None:
    cadence = Cadence.of(schedule)
    if schedule.run_at is not None:
        # A one-off time just passed (within the catch-up window) still fires, at once.
        after = now - timedelta(seconds=schedule.catchup_window_seconds)
    else:
        after = now
    occurrence = next_occurrence(cadence, after=after)
    return occurrence.at if occurrence else None


def _locked(name: str) -> Schedule:
    schedule = Schedule.objects.select_for_update().filter(name=name).first()
    if schedule is None:
        raise NotFound(f"No schedule named {name!r}.")
    return schedule


def _audit(actor: Actor, action: str, schedule: Schedule, *, reason: str = "",
           details: Mapping[str, Any] | None = None) -> None:
    operator_action_record(actor=actor, action=action, target_type=TARGET, target_ids=[schedule.name],
                           reason=reason, details=details)
