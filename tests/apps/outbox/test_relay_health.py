"""/health/ reports the relay failing when due work waits and no relay cycle succeeded (issue 15 §0).

The check is the outbox's own, registered in core from OutboxConfig.ready (core imports no app).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from apps.outbox import enqueue
from apps.outbox.models import OutboxMessage, RelayStatus

pytestmark = pytest.mark.django_db(transaction=True)  # checks run on executor threads, with their own connection

CHECK = "OutboxRelay()"


def _relay_check(client) -> str:
    return client.get("/health/", HTTP_ACCEPT="application/json").json()[CHECK]


def _pending(*, due_for: timedelta) -> OutboxMessage:
    with transaction.atomic():
        message = enqueue("core.heartbeat", args=["health"])
    OutboxMessage.objects.filter(pk=message.pk).update(available_at=timezone.now() - due_for)
    return message


def _status(*, success_ago: timedelta | None, error: str = "") -> RelayStatus:
    now = timezone.now()
    return RelayStatus.objects.create(
        slot=0, holder="worker pid 1", last_success_at=None if success_ago is None else now - success_ago,
        last_error=error, last_error_at=now - timedelta(seconds=1) if error else None, error_count=12 if error else 0,
        updated_at=now,
    )


def test_due_work_and_no_relay_ever_is_a_503_naming_the_fix(client, settings):
    """issue 15 §0: 128 messages pending for 43 minutes with /health/ saying OK must not happen again."""
    settings.OUTBOX_RELAY_STALL_SECONDS = 60
    _pending(due_for=timedelta(minutes=43))

    response = client.get("/health/", HTTP_ACCEPT="application/json")

    assert response.status_code == 503
    assert "No outbox relay has run while 1 message(s) have been due for over 60 s" in response.json()[CHECK]
    assert "'outbox' queue" in response.json()[CHECK]


def test_a_relay_failing_for_longer_than_the_threshold_is_reported_with_its_error(client, settings):
    """issue 15 §0: the relay raising on every cycle (the SQLite timezone.utc bug) turns /health/ red."""
    settings.OUTBOX_RELAY_STALL_SECONDS = 60
    _pending(due_for=timedelta(minutes=5))
    _status(success_ago=timedelta(minutes=10), error="AttributeError: module 'django.utils.timezone' has no 'utc'")

    check = _relay_check(client)

    assert "No outbox relay cycle has succeeded for 60" in check
    assert "(12 failed cycle(s) in a row): AttributeError: module 'django.utils.timezone'" in check


@pytest.mark.parametrize(("due_for", "success_ago"), [
    (timedelta(minutes=5), timedelta(seconds=2)),  # a backlog, but the relay is cycling: not the relay's fault
    (timedelta(seconds=5), None),  # due only just now: give a starting relay the threshold first
    (None, timedelta(hours=2)),  # nothing to do: an idle or stopped relay hurts nobody
])
def test_the_relay_check_passes_otherwise(client, settings, due_for, success_ago):
    settings.OUTBOX_RELAY_STALL_SECONDS = 60
    if due_for is not None:
        _pending(due_for=due_for)
    if success_ago is not None:
        _status(success_ago=success_ago)

    assert _relay_check(client) == "OK"


def test_readiness_does_not_include_the_relay(client, settings):
    """A stalled relay is not a reason to take the web out of rotation: /health/ready ignores it."""
    settings.OUTBOX_RELAY_STALL_SECONDS = 60
    _pending(due_for=timedelta(hours=1))

    response = client.get("/health/ready", HTTP_ACCEPT="application/json")

    assert response.status_code == 200 and CHECK not in response.json()
