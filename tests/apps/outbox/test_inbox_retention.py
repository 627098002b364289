"""Inbox retention (issue 15, smaller debts): entries are purged after OUTBOX_INBOX_RETENTION_DAYS, which
must outlast every way a handled message can arrive again."""

import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.task_contract import INBOX_PURGE, TASK_QUEUES
from apps.outbox.models import InboxEntry
from apps.outbox.services import inbox_purge
from tests.processes import ROOT, process_env


@pytest.mark.django_db
def test_inbox_entries_past_retention_are_purged_in_batches_and_recent_ones_kept(settings):
    settings.OUTBOX_INBOX_RETENTION_DAYS = 14
    old = [InboxEntry.objects.create(consumer="c", message_id=uuid.uuid4(),
                                     processed_at=timezone.now() - timedelta(days=15)) for _ in range(5)]
    recent = InboxEntry.objects.create(consumer="c", message_id=uuid.uuid4(),
                                       processed_at=timezone.now() - timedelta(days=13))
    fresh = InboxEntry.objects.create(consumer="c", message_id=uuid.uuid4())

    assert inbox_purge(batch_size=2) == len(old)

    assert set(InboxEntry.objects.values_list("pk", flat=True)) == {recent.pk, fresh.pk}
    assert fresh.processed_at is not None  # stamped by the database


def test_beat_purges_the_inbox_hourly_with_an_expiry():
    from workers.beat import BEAT_SCHEDULE
    from workers.tasks.outbox import purge_inbox

    [entry] = [entry for entry in BEAT_SCHEDULE.values() if entry["task"] == INBOX_PURGE]
    assert entry["schedule"] == 3600.0 and 0 < entry["options"]["expires"] <= 3600
    assert purge_inbox.name == INBOX_PURGE and TASK_QUEUES[INBOX_PURGE] == "default"
    assert purge_inbox.periodic, "a failed purge is not retried through the outbox: beat runs the next one"


@pytest.mark.django_db
def test_a_retention_shorter_than_the_redelivery_horizon_is_refused_at_start():
    env = process_env(OUTBOX_INBOX_RETENTION_DAYS="7")  # the outbox keeps rows 7 days: too short
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode != 0
    assert "OUTBOX_INBOX_RETENTION_DAYS (7) must exceed" in result.stderr
