"""DST: both 2027 transitions in Berlin and New York, on preview output and on fires driven by a controlled clock."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from apps.schedules.cadence import Cadence, occurrences_list
from apps.schedules.models import ScheduleFire
from apps.schedules.services import schedule_create
from tests.apps.schedules.schedule_tasks import RECORD
from tests.apps.schedules.support import ACTOR, fire_through, utc

# (zone, window start UTC, expected daily `30 2 * * *` fires UTC, the one that DST shifted or None)
DAILY = [
    # Spring forward 2027-03-28 02:00 CET -> 03:00 CEST: 02:30 does not exist, fires at 03:00 CEST (01:00Z).
    ("Europe/Berlin", utc(2027, 3, 26, 12), [utc(2027, 3, 27, 1, 30), utc(2027, 3, 28, 1), utc(2027, 3, 29, 0, 30)],
     utc(2027, 3, 28, 1)),
    # Fall back 2027-10-31 03:00 CEST -> 02:00 CET: 02:30 occurs twice, fires once at its first (00:30Z).
    ("Europe/Berlin", utc(2027, 10, 29, 12), [utc(2027, 10, 30, 0, 30), utc(2027, 10, 31, 0, 30),
                                             utc(2027, 11, 1, 1, 30)], None),
    # Spring forward 2027-03-14 02:00 EST -> 03:00 EDT: fires at 03:00 EDT (07:00Z).
    ("America/New_York", utc(2027, 3, 12, 12), [utc(2027, 3, 13, 7, 30), utc(2027, 3, 14, 7),
                                               utc(2027, 3, 15, 6, 30)], utc(2027, 3, 14, 7)),
    # Fall back 2027-11-07 02:00 EDT -> 01:00 EST: 02:30 happens once (after the repeated 01:xx hour).
    ("America/New_York", utc(2027, 11, 5, 12), [utc(2027, 11, 6, 6, 30), utc(2027, 11, 7, 7, 30),
                                               utc(2027, 11, 8, 7, 30)], None),
]
# (zone, a UTC instant a few hours before the change)
TRANSITIONS = [("Europe/Berlin", utc(2027, 3, 27, 21)), ("Europe/Berlin", utc(2027, 10, 30, 21)),
               ("America/New_York", utc(2027, 3, 14, 3)), ("America/New_York", utc(2027, 11, 7, 2))]
STEPS = [("0 * * * *", timedelta(hours=1)), ("*/15 * * * *", timedelta(minutes=15))]


@pytest.mark.parametrize(("zone", "start", "expected", "shifted"), DAILY)
def test_daily_preview_fires_once_per_day_through_the_change(zone, start, expected, shifted):
    found = occurrences_list(Cadence(cron="30 2 * * *", timezone=zone), after=start, count=3)
    assert [o.at for o in found] == expected
    assert [o.at for o in found if o.shifted] == ([shifted] if shifted else [])


@pytest.mark.parametrize(("zone", "start"), TRANSITIONS)
@pytest.mark.parametrize(("cron", "step"), STEPS)
def test_interval_like_preview_keeps_every_real_boundary(zone, start, cron, step):
    found = occurrences_list(Cadence(cron=cron, timezone=zone), after=start, count=int(timedelta(hours=8) / step))
    gaps = {later.at - earlier.at for earlier, later in itertools.pairwise(found)}
    assert gaps == {step}, f"{cron} in {zone}: uneven gaps {gaps}"
    assert not any(o.shifted for o in found)


@pytest.mark.django_db
@pytest.mark.parametrize(("zone", "start", "expected", "shifted"), DAILY)
def test_daily_fires_with_a_controlled_clock(zone, start, expected, shifted):
    schedule = schedule_create(data={"name": "daily", "task": RECORD, "cron": "30 2 * * *", "timezone": zone,
                                     "start_at": start}, actor=ACTOR)
    fires = fire_through(schedule, until=expected[-1])
    assert [fire.nominal_at for fire in fires] == expected
    assert all(fire.state == ScheduleFire.State.ENQUEUED for fire in fires)
    assert [f.nominal_at for f in fires if f.decision == ScheduleFire.Decision.SHIFTED] == ([shifted] if shifted
                                                                                             else [])


@pytest.mark.django_db
@pytest.mark.parametrize(("zone", "start"), TRANSITIONS)
@pytest.mark.parametrize(("cron", "step"), STEPS)
def test_interval_like_fires_with_a_controlled_clock(zone, start, cron, step):
    schedule = schedule_create(data={"name": "steps", "task": RECORD, "cron": cron, "timezone": zone,
                                     "overlap": "allow_all", "start_at": start}, actor=ACTOR)
    fires = fire_through(schedule, until=start + timedelta(hours=8))
    nominal = [fire.nominal_at for fire in fires]
    assert len(nominal) == int(timedelta(hours=8) / step) + 1  # both ends included
    assert nominal[0] == start
    assert {b - a for a, b in itertools.pairwise(nominal)} == {step}
