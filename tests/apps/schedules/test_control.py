"""Admin and `manage.py schedule`: next fires in zone and UTC, last fire, pause/resume with a note, run now,
fire history; every write through the services (validated, audited)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.core.models import OperatorAction
from apps.schedules.firing import schedules_fire_due
from apps.schedules.models import Schedule, ScheduleFire
from apps.schedules.services import schedule_create
from tests.apps.schedules.schedule_tasks import RECORD
from tests.apps.schedules.support import ACTOR

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = StringIO()
    call_command("schedule", *args, stdout=out)
    return out.getvalue()


def test_command_create_show_pause_resume_trigger_preview_list():
    assert "Created nightly" in _run("create", "nightly", RECORD, "--cron", "30 2 * * *", "--timezone",
                                     "Europe/Berlin", "--args", '["x"]')
    shown = _run("show", "nightly")
    assert shown.count("  next ") == 5 and "CET" in shown and "Z" in shown
    assert "Paused nightly" in _run("pause", "nightly", "--note", "maintenance")
    assert Schedule.objects.get().note == "maintenance"
    assert "Resumed nightly" in _run("resume", "nightly")
    assert "Triggered nightly" in _run("trigger", "nightly")
    assert ScheduleFire.objects.get().decision == ScheduleFire.Decision.MANUAL
    assert _run("preview", "30 2 * * *", "--timezone", "Europe/Berlin", "--start", "2027-03-26T12:00:00Z",
                "--count", "3").split() == ["2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"]
    assert "nightly" in _run("list")
    assert set(OperatorAction.objects.filter(via="cli").values_list("action", flat=True)) == {
        "schedule.create", "schedule.pause", "schedule.resume", "schedule.trigger"}


def test_command_refuses_invalid_input_and_saves_nothing():
    with pytest.raises(CommandError, match="cron"):
        _run("create", "bad", RECORD, "--cron", "99 * * * *")
    assert not Schedule.objects.exists()


def test_admin_shows_next_fires_last_fire_and_history(admin_client):
    schedule = schedule_create(data={"name": "tick", "task": RECORD, "interval_seconds": 1,
                                     "timezone": "Europe/Berlin"}, actor=ACTOR)
    schedules_fire_due(now=schedule.next_fire_at)
    page = admin_client.get(reverse("admin:schedules_schedule_change", args=[schedule.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "Next 5 fires" in text and text.count(" UTC</td>") == 5 and text.count(" CET</td>") == 5
    assert "fired/enqueued" in text and "1 fire row(s)" in text
    history = admin_client.get(reverse("admin:schedules_schedulefire_changelist"), {"schedule__id__exact": schedule.pk})
    assert history.status_code == 200 and "enqueued" in history.content.decode()


def test_admin_actions_pause_with_a_note_and_run_now(admin_client):
    schedule = schedule_create(data={"name": "tick", "task": RECORD, "interval_seconds": 60}, actor=ACTOR)
    url = reverse("admin:schedules_schedule_changelist")
    admin_client.post(url, {"action": "pause_selected", "_selected_action": [schedule.pk], "note": "db upgrade"})
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.note) == (False, "db upgrade")
    admin_client.post(url, {"action": "run_now", "_selected_action": [schedule.pk], "note": ""})
    assert schedule.fires.get().decision == ScheduleFire.Decision.MANUAL
    assert set(OperatorAction.objects.filter(via="admin").values_list("action", flat=True)) == {
        "schedule.pause", "schedule.trigger"}


def test_admin_add_form_validates_through_the_service(admin_client):
    url = reverse("admin:schedules_schedule_add")
    form = {"name": "n1", "task": RECORD, "args": "[]", "kwargs": "{}", "cron": "0 61 * * *", "timezone": "UTC",
            "overlap": "skip", "catchup_window_seconds": "60", "jitter_seconds": "0", "enabled": "on"}
    refused = admin_client.post(url, form)
    assert refused.status_code == 200 and not Schedule.objects.exists()
    form["cron"] = "0 3 * * *"
    saved = admin_client.post(url, form)
    assert saved.status_code == 302, saved.content.decode()[:3000]
    assert Schedule.objects.get().next_fire_at is not None
    assert OperatorAction.objects.filter(action="schedule.create", via="admin").exists()
