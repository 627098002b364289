"""Schedules under real `celery beat` and worker processes: several beats, kill -9, a database outage, live edits.

Every nominal second between a schedule's first and last fire must have exactly one fire row and
exactly one committed task effect, whatever happened to the processes in between.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from contextlib import ExitStack
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection

from apps.schedules.models import ScheduleFire
from apps.schedules.services import schedule_create
from tests.apps.schedules.schedule_tasks import RECORD
from tests.apps.schedules.support import ACTOR, effects_create, effects_drop, effects_per_fire
from tests.helpers import wait_until
from tests.processes import NO_RELAY, celery_process

pytestmark = pytest.mark.django_db(transaction=True)

BEAT_ENV = {"DJANGO_SETTINGS_MODULE": "tests.apps.schedules.beat_settings"}
TEST_TASKS = ("--include", "tests.apps.schedules.schedule_tasks")
SECOND = timedelta(seconds=1)


@pytest.fixture
def effects():
    effects_create()
    yield
    effects_drop()


def _beat(stack: ExitStack, tmp_path, index: int, **env: str):
    # Each beat keeps its own state file for the static entries; the database schedules are shared.
    return stack.enter_context(celery_process("beat", tmp_path / f"beat{index}.log", "--schedule",
                                              str(tmp_path / f"beat{index}.db"), broker_url=settings.RABBITMQ_URL,
                                              **BEAT_ENV, **env))


def _task_worker(stack: ExitStack, tmp_path, name: str):
    return stack.enter_context(celery_process("worker", tmp_path / f"{name}.log", "--concurrency", "2",
                                              "--hostname", f"{name}@%h", *NO_RELAY, *TEST_TASKS,
                                              broker_url=settings.RABBITMQ_URL))


def _relay_worker(stack: ExitStack, tmp_path):
    return stack.enter_context(celery_process("worker", tmp_path / "relay.log", "--concurrency", "1",
                                              "--hostname", "relay@%h", "--queues", "outbox", *TEST_TASKS,
                                              broker_url=settings.RABBITMQ_URL))


def _kill9(process) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def _assert_every_second_once(names: list[str]) -> int:
    fires = list(ScheduleFire.objects.filter(schedule__name__in=names).order_by("schedule_id", "nominal_at")
                 .values_list("schedule__name", "nominal_at", "decision", "state", "id"))
    checked = 0
    for name in names:
        mine = [fire for fire in fires if fire[0] == name]
        assert len(mine) >= 3, f"{name} hardly fired: {mine}"
        nominal = [fire[1] for fire in mine]
        expected = int((nominal[-1] - nominal[0]) / SECOND) + 1
        assert len(nominal) == expected, f"{name}: {expected} nominal seconds, {len(nominal)} fire rows"
        assert all(later - earlier == SECOND for earlier, later in itertools.pairwise(nominal)), name
        assert {fire[2] for fire in mine} == {ScheduleFire.Decision.FIRED}, f"{name}: {set(f[2] for f in mine)}"
        checked += len(mine)
    return checked


def _run_three_beats(tmp_path, *, seconds: float, schedules: int = 20) -> None:
    names = [f"every-second-{index:02d}" for index in range(schedules)]
    with ExitStack() as stack:
        _relay_worker(stack, tmp_path)
        worker = _task_worker(stack, tmp_path, "tasks")
        beats = [_beat(stack, tmp_path, index) for index in range(3)]
        for name in names:
            schedule_create(data={"name": name, "task": RECORD, "args": [name], "interval_seconds": 1,
                                  "overlap": "allow_all"}, actor=ACTOR)
        wait_until(lambda: ScheduleFire.objects.count() >= schedules, timeout=30, message="the first fires")
        started = time.monotonic()
        wait_until(lambda: time.monotonic() - started >= seconds / 2, timeout=seconds, interval=0.5)
        _kill9(beats[0])  # mid-cycle, perhaps inside its claim transaction
        _kill9(worker)  # with tasks in flight: RabbitMQ gives their unacknowledged messages back
        _task_worker(stack, tmp_path, "tasks-restarted")
        wait_until(lambda: time.monotonic() - started >= seconds, timeout=seconds, interval=0.5)
        for beat in beats[1:]:
            beat.send_signal(signal.SIGTERM)
            beat.wait(timeout=30)
        # Every fire's task runs to its end (the restarted worker drains what the killed one held).
        wait_until(lambda: not ScheduleFire.objects.filter(state__in=ScheduleFire.ACTIVE_STATES).exists(),
                   timeout=120, message="every fire finished")
    fired = _assert_every_second_once(names)
    assert fired >= schedules * seconds * 0.5
    assert not ScheduleFire.objects.exclude(state=ScheduleFire.State.SUCCEEDED).exists()
    per_fire = effects_per_fire()
    assert len(per_fire) == fired and set(per_fire.values()) == {1}, "one committed effect per fire"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM test_schedule_effects")
        assert cursor.fetchone()[0] == fired


@pytest.mark.timeout(300)
def test_three_beats_fire_every_second_once_through_kill9(tmp_path, effects):
    _run_three_beats(tmp_path, seconds=16)


@pytest.mark.chaos
@pytest.mark.timeout(900)
def test_three_beats_for_a_minute_fire_every_second_once_through_kill9(tmp_path, effects):
    _run_three_beats(tmp_path, seconds=60)
