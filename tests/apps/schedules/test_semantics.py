"""Firing semantics with a controlled clock: overlap decisions, catch-up window, one-offs, end, finish hooks,
pause on failure, run now, backfill of missed times, retention, and the per-schedule isolation of a bad task."""

from __future__ import annotations

from datetime import timedelta

import pytest

from apps.core.task_contract import HEARTBEAT, TASK_QUEUES
from apps.outbox.models import OutboxMessage
from apps.schedules.clock import database_now
from apps.schedules.fire_context import fire_id_of
from apps.schedules.firing import schedules_fire_due
from apps.schedules.models import Schedule, ScheduleFire
from apps.schedules.services import (
    fire_finished,
    fire_started,
    schedule_backfill,
    schedule_create,
    schedule_fires_purge,
    schedule_update,
)
from tests.apps.schedules.schedule_tasks import RECORD
from tests.apps.schedules.support import ACTOR

pytestmark = pytest.mark.django_db
State, Decision = ScheduleFire.State, ScheduleFire.Decision


def _every_second(name="tick", **extra) -> Schedule:
    return schedule_create(data={"name": name, "task": RECORD, "interval_seconds": 1, **extra}, actor=ACTOR)


def _states(schedule: Schedule) -> list[str]:
    return list(schedule.fires.order_by("nominal_at").values_list("state", flat=True))


def test_a_fire_row_task_row_and_advance_commit_together():
    schedule = _every_second()
    report = schedules_fire_due(now=schedule.next_fire_at)
    fire = schedule.fires.get()
    message = OutboxMessage.objects.get(message_id=fire.task_id)
    assert report.enqueued == 1 and fire.state == State.ENQUEUED
    assert (message.name, message.status) == (RECORD, OutboxMessage.Status.PENDING)
    assert fire_id_of(message.context) == fire.pk  # the worker finds its fire here
    schedule.refresh_from_db()
    assert schedule.next_fire_at == fire.nominal_at + timedelta(seconds=1)
    assert schedules_fire_due(now=fire.nominal_at).schedules == 0  # nothing is due twice


@pytest.mark.parametrize(("overlap", "expected"), [
    ("skip", [State.ENQUEUED, State.SKIPPED, State.SKIPPED]),
    ("buffer_one", [State.ENQUEUED, State.BUFFERED, State.SKIPPED]),
    ("buffer_all", [State.ENQUEUED, State.BUFFERED, State.BUFFERED]),
    ("allow_all", [State.ENQUEUED, State.ENQUEUED, State.ENQUEUED]),
])
def test_overlap_policy_decides_while_a_fire_is_unfinished(overlap, expected):
    schedule = _every_second(overlap=overlap)
    start = schedule.next_fire_at
    for offset in range(3):
        schedules_fire_due(now=start + timedelta(seconds=offset))
    assert _states(schedule) == expected


def test_a_finished_fire_releases_the_oldest_buffered_one():
    schedule = _every_second(overlap="buffer_all")
    start = schedule.next_fire_at
    for offset in range(3):
        schedules_fire_due(now=start + timedelta(seconds=offset))
    first, second, _third = schedule.fires.order_by("nominal_at")
    assert fire_started(fire_id=first.pk, task_id=first.task_id)
    assert fire_finished(fire_id=first.pk, state=State.SUCCEEDED)
    assert _states(schedule) == [State.SUCCEEDED, State.ENQUEUED, State.BUFFERED]
    second.refresh_from_db()
    assert OutboxMessage.objects.filter(message_id=second.task_id).exists()
    assert not fire_finished(fire_id=first.pk, state=State.FAILED)  # a finished fire stays finished


def test_occurrences_older_than_the_catch_up_window_are_missed_the_rest_fire():
    schedule = _every_second(catchup_window_seconds=3, overlap="allow_all")
    start = database_now() - timedelta(minutes=1)  # as if no beat ran since then (backfill needs a past range)
    Schedule.objects.filter(pk=schedule.pk).update(anchor_at=start, next_fire_at=start)
    report = schedules_fire_due(now=start + timedelta(seconds=9, milliseconds=500))
    assert (report.missed, report.enqueued) == (7, 3)  # the window starts at +6.5 s
    assert _states(schedule) == [State.MISSED] * 7 + [State.ENQUEUED] * 3

    counts = schedule_backfill(name="tick", start=start, end=start + timedelta(seconds=6), actor=ACTOR,
                               overlap="allow_all")
    assert counts == {"enqueued": 7, "buffered": 0, "skipped": 0, "existing": 0}
    assert _states(schedule) == [State.ENQUEUED] * 10


def test_a_one_off_fires_once_and_an_end_stops_the_cadence():
    now = database_now()
    once = schedule_create(data={"name": "once", "task": RECORD, "run_at": now + timedelta(seconds=2)}, actor=ACTOR)
    ending = _every_second("ending", end_at=now + timedelta(seconds=3), overlap="allow_all")
    schedules_fire_due(now=now + timedelta(seconds=10))
    once.refresh_from_db()
    ending.refresh_from_db()
    assert once.fires.count() == 1 and once.next_fire_at is None
    assert ending.next_fire_at is None
    assert all(fire.nominal_at <= now + timedelta(seconds=3) for fire in ending.fires.all())


def test_pause_on_failure_pauses_after_a_failed_fire():
    schedule = _every_second(pause_on_failure=True)
    schedules_fire_due(now=schedule.next_fire_at)
    fire = schedule.fires.get()
    fire_finished(fire_id=fire.pk, state=State.FAILED, error="task outcome: dead")
    schedule.refresh_from_db()
    assert not schedule.enabled and "failed" in schedule.note
    assert schedules_fire_due(now=schedule.next_fire_at + timedelta(seconds=5)).schedules == 0


def test_a_changed_cadence_restarts_from_now():
    schedule = _every_second()
    updated = schedule_update(name="tick", changes={"interval_seconds": 3600}, actor=ACTOR)
    assert updated.next_fire_at - updated.anchor_at == timedelta(hours=1)
    assert updated.version == schedule.version + 1


def test_a_schedule_whose_task_left_the_contract_is_paused_and_others_still_fire():
    broken = _every_second("broken")
    fine = schedule_create(data={"name": "fine", "task": HEARTBEAT, "args": ["fine"], "interval_seconds": 1},
                           actor=ACTOR)
    TASK_QUEUES.pop(RECORD)
    try:
        report = schedules_fire_due(now=max(broken.next_fire_at, fine.next_fire_at))
    finally:
        TASK_QUEUES[RECORD] = "default"
    broken.refresh_from_db()
    assert not broken.enabled and "Unknown task" in broken.note and not broken.fires.exists()
    assert report.enqueued == 1 and fine.fires.get().state == State.ENQUEUED


def test_retention_purges_old_finished_fires_only(settings):
    schedule = _every_second(overlap="allow_all")
    start = schedule.next_fire_at
    for offset in range(2):
        schedules_fire_due(now=start + timedelta(seconds=offset))
    old, unfinished = schedule.fires.order_by("nominal_at")
    ScheduleFire.objects.filter(pk=old.pk).update(state=State.SUCCEEDED)
    ScheduleFire.objects.update(decided_at=database_now() - timedelta(days=settings.SCHEDULES_FIRE_RETENTION_DAYS + 1))
    assert schedule_fires_purge() == 1
    assert list(schedule.fires.values_list("pk", flat=True)) == [unfinished.pk]
