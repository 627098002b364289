"""The firing loop inside a real `celery beat`: overlap policies with a slow task, catch-up after a database
outage, and an edit picked up while beat runs."""

from __future__ import annotations

import itertools
import time
from contextlib import ExitStack
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection

from apps.schedules.models import Schedule, ScheduleFire
from apps.schedules.services import schedule_create, schedule_update
from tests.apps.schedules.schedule_tasks import RECORD, SLOW
from tests.apps.schedules.support import ACTOR, effects_create, effects_drop
from tests.helpers import wait_until
from tests.processes import celery_process
from tests.workers.db_proxy import PostgresProxy

pytestmark = pytest.mark.django_db(transaction=True)

BEAT_ENV = {"DJANGO_SETTINGS_MODULE": "tests.apps.schedules.beat_settings"}
TEST_TASKS = ("--include", "tests.apps.schedules.schedule_tasks")
State, Decision = ScheduleFire.State, ScheduleFire.Decision


@pytest.fixture
def effects():
    effects_create()
    yield
    effects_drop()


def _beat(stack: ExitStack, tmp_path, name: str = "beat", **env: str):
    return stack.enter_context(celery_process("beat", tmp_path / f"{name}.log", "--schedule",
                                              str(tmp_path / f"{name}.db"), **BEAT_ENV, **env))


def _worker(stack: ExitStack, tmp_path, *, concurrency: str = "3"):
    # Relays in the test process' database are started by the worker itself (it consumes the outbox queue).
    return stack.enter_context(celery_process("worker", tmp_path / "worker.log", "--concurrency", concurrency,
                                              *TEST_TASKS))


def _fires(name: str) -> list[ScheduleFire]:
    return list(ScheduleFire.objects.filter(schedule__name=name).order_by("nominal_at"))


OVERLAPS = ("skip", "buffer_one", "buffer_all", "allow_all")


@pytest.mark.timeout(240)
def test_overlap_policies_with_a_task_slower_than_its_interval(tmp_path, effects, broker_redis):
    # One beat and one worker for the four policies side by side (each needs one slot, allow_all three).
    with ExitStack() as stack:
        _worker(stack, tmp_path, concurrency="8")
        _beat(stack, tmp_path)
        for overlap in OVERLAPS:
            schedule_create(data={"name": f"slow-{overlap}", "task": SLOW, "kwargs": {"seconds": 2.5},
                                  "interval_seconds": 1, "overlap": overlap}, actor=ACTOR)
        wait_until(lambda: all(len(_fires(f"slow-{overlap}")) >= 8 for overlap in OVERLAPS), timeout=60,
                   message="eight occurrences decided per schedule")
        Schedule.objects.update(enabled=False)
        wait_until(lambda: not ScheduleFire.objects.filter(state__in=[State.BUFFERED, *ScheduleFire.ACTIVE_STATES])
                   .exists(), timeout=90, message="buffered and running fires to finish")
    for overlap in OVERLAPS:
        _assert_overlap_policy(overlap, _fires(f"slow-{overlap}"))


def _assert_overlap_policy(overlap: str, fires: list[ScheduleFire]) -> None:
    states = [fire.state for fire in fires]
    ran = [fire for fire in fires if fire.state == State.SUCCEEDED]
    if overlap == "allow_all":
        assert set(states) == {State.SUCCEEDED}, overlap
        overlapping = any(a.finished_at > b.started_at for a, b in itertools.pairwise(ran))
        assert overlapping, "allow_all runs fires concurrently"
        return
    # Every other policy runs one fire at a time.
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(ran)), f"{overlap}: fires overlapped"
    if overlap == "skip":
        assert State.SKIPPED in states and set(states) == {State.SUCCEEDED, State.SKIPPED}, states
    elif overlap == "buffer_one":
        assert State.SKIPPED in states, states  # a second waiting fire is dropped
        assert len(ran) > len(fires) // 4, states
    else:  # buffer_all: nothing is dropped
        assert set(states) == {State.SUCCEEDED}, states


def _fired_after_missed(name: str) -> int:
    fires = _fires(name)
    missed = [fire.nominal_at for fire in fires if fire.decision == Decision.MISSED]
    return sum(1 for fire in fires if missed and fire.nominal_at > missed[-1]) if missed else 0


@pytest.mark.timeout(240)
@pytest.mark.parametrize("outage_seconds", [
    12,
    pytest.param(30, marks=pytest.mark.chaos, id="the issue's 30 s"),
])
def test_catch_up_after_the_database_was_unreachable(outage_seconds, tmp_path, broker_redis):
    db = settings.DATABASES["default"]
    proxy = PostgresProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))
    through_proxy = f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{connection.settings_dict['NAME']}"
    try:
        with ExitStack() as stack:
            _beat(stack, tmp_path, TEST_DATABASE_URL=through_proxy)
            schedule_create(data={"name": "ticker", "task": RECORD, "interval_seconds": 1,
                                  "catchup_window_seconds": 5, "overlap": "allow_all"}, actor=ACTOR)
            wait_until(lambda: len(_fires("ticker")) >= 3, timeout=30, message="fires before the outage")
            proxy.cut()
            before = len(_fires("ticker"))
            wait_until(lambda: proxy.refused >= 3, timeout=30, message="beat to try the database")
            # Away longer than the 5 s catch-up window: most of the outage is missed, the rest caught up.
            cut_at = time.monotonic()
            wait_until(lambda: time.monotonic() - cut_at >= outage_seconds, timeout=outage_seconds + 10, interval=0.5)
            assert len(_fires("ticker")) == before, "nothing fired while beat could not reach the database"
            proxy.restore()
            wait_until(lambda: _fired_after_missed("ticker") >= 8, timeout=60, message="missed rows, then fires again")
    finally:
        proxy.close()
    fires = _fires("ticker")
    nominal = [fire.nominal_at for fire in fires]
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(nominal)), "a gap"
    missed = [fire for fire in fires if fire.decision == Decision.MISSED]
    assert outage_seconds - 10 <= len(missed) <= outage_seconds + 5, len(missed)
    # The loop came back and fired the occurrences still inside the catch-up window, late but fired.
    first_after = next(fire for fire in fires if fire.nominal_at > missed[-1].nominal_at)
    assert first_after.decision == Decision.FIRED
    assert first_after.lateness_seconds > 0


@pytest.mark.timeout(120)
def test_an_edit_while_beat_runs_fires_on_the_new_cadence(tmp_path, broker_redis):
    with ExitStack() as stack:
        # A long safety-net sleep: only the change signal can make the loop look before it ends.
        _beat(stack, tmp_path, SCHEDULES_MAX_SLEEP_MS="120000", OUTBOX_RELAY_TICK_SECONDS="600",
              HEARTBEAT_SECONDS="600")
        schedule = schedule_create(data={"name": "slowly", "task": RECORD, "interval_seconds": 3600}, actor=ACTOR)
        wait_until(lambda: (tmp_path / "beat.log").read_bytes().count(b"beat: Starting") >= 1, timeout=30)
        edited = schedule_update(name="slowly", changes={"interval_seconds": 1}, actor=ACTOR)
        # Without the change signal the loop would sleep up to SCHEDULES_MAX_SLEEP_MS (set long below).
        wait_until(lambda: len(_fires("slowly")) >= 3, timeout=20, message="fires on the new 1 s cadence")
    fires = _fires("slowly")
    assert fires[0].nominal_at == edited.anchor_at + timedelta(seconds=1)
    # A generous bound that still needs the signal: asleep until its next static entry, the loop would
    # fire several seconds late (or, with no static entry due, up to two minutes).
    assert fires[0].lateness_seconds < 1.0
    assert schedule.pk == edited.pk
