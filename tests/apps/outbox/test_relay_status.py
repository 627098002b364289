"""A failing relay is visible (issue 15 §0): the serving loop survives any error, records it, logs it once."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.outbox import enqueue, serving
from apps.outbox.models import OutboxMessage, RelayStatus
from apps.outbox.relay import relay_once
from apps.outbox.relay_status import error_text

pytestmark = pytest.mark.django_db(transaction=True)



def timezone_bug() -> AttributeError:
    """The §0 SQLite bug, as the relay raised it on every cycle."""
    return AttributeError("module 'django.utils.timezone' has no attribute 'utc'")


def _pending(count: int = 1) -> list[OutboxMessage]:
    with transaction.atomic():
        return [enqueue("core.heartbeat", args=[f"status-{n}"]) for n in range(count)]


@pytest.fixture
def faults(monkeypatch):
    """Make the relay's cycles raise the given exceptions, in order, then run for real."""
    planned: list[BaseException] = []
    pauses: list[int] = []
    real_pause = serving._pause

    def failing_relay_once(transport):
        if planned:
            raise planned.pop(0)
        return relay_once(transport)

    def recorded_pause(failures: int) -> float:
        pauses.append(failures)
        return real_pause(failures)

    monkeypatch.setattr(serving, "relay_once", failing_relay_once)
    monkeypatch.setattr(serving, "_pause", recorded_pause)
    monkeypatch.setattr(serving, "_PAUSE_BASE_SECONDS", 0.01)  # keep the test short; the growth is the same
    return planned, pauses


def test_any_exception_is_recorded_backed_off_retried_and_logged_once(faults, broker_redis, caplog):
    """issue 15 §0: a cycle raising anything (here the SQLite timezone.utc bug, then a KeyError) does not end
    the relay: each failure is recorded with its time and count, backed off, retried, and each distinct error
    is logged once with its traceback, not once per cycle."""
    planned, pauses = faults
    planned.extend([timezone_bug(), timezone_bug(), timezone_bug(), KeyError("boom"), KeyError("boom")])
    first_bug, first_key_error = planned[0], planned[3]
    rows = _pending(3)

    with caplog.at_level(logging.INFO, logger="apps.outbox.serving"):
        assert serving.relay_serve(lease_seconds=3) == "lease-ended"

    assert set(OutboxMessage.objects.filter(pk__in=[row.pk for row in rows]).values_list("status", flat=True)) == {
        "published"}
    status = RelayStatus.objects.get(slot=0)
    assert status.error_count == 5 and status.last_error == "KeyError: 'boom'"
    assert status.last_error_at is not None and status.last_success_at > status.last_error_at
    assert pauses == [1, 2, 3, 4, 5], "every failure backed off, growing"
    failures = [record for record in caplog.records if "cycle failed" in record.getMessage()]
    # The log filter (apps/core/logs.py) keeps the traceback as masked text.
    assert ["Traceback" in (record.exc_text or "") for record in failures] == [True, True]
    assert [record.exc_text.splitlines()[-1] for record in failures] == [error_text(first_bug),
                                                                          error_text(first_key_error)]
    assert failures[0].levelno == logging.ERROR
    assert any("recovered after 5 failed cycle(s)" in record.getMessage() for record in caplog.records)


def test_a_failure_is_written_at_once_and_success_at_most_about_once_a_second(faults, broker_redis, settings):
    """issue 15 §0: the hot loop writes its status row at most about once a second (here cycles run every
    10 ms), but a change of error state is written in the cycle it happens."""
    planned, _ = faults
    settings.OUTBOX_POLL_SECONDS = 0.01
    planned.append(timezone_bug())

    with CaptureQueriesContext(connection) as queries:
        serving.relay_serve(lease_seconds=2.5)

    statements = [query["sql"] for query in queries.captured_queries]
    cycles = sum("WITH claimed AS" in sql for sql in statements)
    writes = [sql for sql in statements if sql.startswith("UPDATE") and "outbox_relaystatus" in sql]
    # start + the failure (at once) + the recovery (at once) + about one a second for 2.5 s + the final flush
    assert len(writes) <= 7, writes
    assert cycles >= 10 * len(writes), f"{cycles} cycles, {len(writes)} writes"
    first_claim = next(index for index, sql in enumerate(statements) if "WITH claimed AS" in sql)
    assert any("last_error" in sql for sql in statements[:first_claim]), "the failure was written in its cycle"


def _status(**fields) -> RelayStatus:
    now = timezone.now()
    defaults = {"slot": 0, "holder": "worker-1 pid 42", "started_at": now - timedelta(minutes=5),
                "last_success_at": now - timedelta(minutes=3), "last_error": "OperationalError: database is locked",
                "last_error_at": now - timedelta(seconds=2), "error_count": 77, "updated_at": now,
                "unroutable_events": 4, "last_unroutable_topic": "nobody.listens"}
    return RelayStatus.objects.create(**{**defaults, **fields})


def test_stats_command_shows_each_relays_last_success_and_last_error():
    """issue 15 §0: outbox_stats (text and --json) shows the relay's last successful cycle and last error."""
    _status()
    out = StringIO()
    call_command("outbox_stats", "--json", stdout=out)
    stats = json.loads(out.getvalue())
    text = StringIO()
    call_command("outbox_stats", stdout=text)

    [relay] = stats["relays"]
    assert relay["state"] == "failing" and relay["error_count"] == 77
    assert relay["last_error"] == "OperationalError: database is locked"
    assert 170 < relay["last_success_age_seconds"] < 400
    assert stats["unroutable_events"] == 4
    assert "relay 0 (worker-1 pid 42): failing, last success 1" in text.getvalue()
    assert "77 failed cycle(s) in a row): OperationalError: database is locked" in text.getvalue()


@pytest.fixture
def staff_api(django_user_model):
    from rest_framework.test import APIClient

    from apps.core.api_keys import api_key_create

    django_user_model.objects.create_user(username="ops", password="x", is_staff=True, is_superuser=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(username='ops')[1]}")
    return client


def test_api_stats_show_the_relays_and_why_the_relay_is_failing(staff_api, settings):
    """issue 15 §0: /api/outbox/stats/ carries each relay's status and the problem /health/ reports."""
    _status()
    [message] = _pending()
    OutboxMessage.objects.filter(pk=message.pk).update(available_at=timezone.now() - timedelta(minutes=10))

    body = staff_api.get("/api/outbox/stats/").json()

    [relay] = body["relays"]
    assert (relay["slot"], relay["state"], relay["error_count"]) == (0, "failing", 77)
    assert relay["last_error"] == "OperationalError: database is locked"
    assert "No outbox relay cycle has succeeded for 18" in body["relay_problem"]
    assert "database is locked" in body["relay_problem"]
    assert body["unroutable_events"] == 4


def test_admin_summary_bar_shows_the_relay_failing(client, django_user_model):
    """issue 15 §0: the outbox changelist's summary bar shows the failing relay and the problem."""
    django_user_model.objects.create_superuser(username="root", password="pw-for-tests-only")
    client.login(username="root", password="pw-for-tests-only")
    _status()
    [message] = _pending()
    OutboxMessage.objects.filter(pk=message.pk).update(available_at=timezone.now() - timedelta(minutes=10))

    page = client.get("/admin/outbox/outboxmessage/").content.decode()

    assert 'class="outbox-relay outbox-relay-failing"' in page
    assert "77 failed cycle(s) in a row): OperationalError: database is locked" in page
    assert 'id="outbox-relay-problem"' in page
    assert "reached no queue: <strong>4</strong>" in page.replace("\n", "").replace("    ", "")


def test_an_unreachable_database_is_retried_for_the_lease_and_logged_once(monkeypatch, caplog):
    """A relay that cannot even open its slot connection waits out its lease instead of failing the task, so
    its successor (and a worker without beat) keeps trying; the outage is logged once, not per attempt."""
    import psycopg

    attempts = []

    def unreachable():
        attempts.append(1)
        raise psycopg.OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr(serving, "PostgresWaker", unreachable)
    monkeypatch.setattr(serving, "_PAUSE_BASE_SECONDS", 0.01)

    with caplog.at_level(logging.WARNING, logger="apps.outbox.serving"):
        assert serving.relay_serve(lease_seconds=0.5) == "database-unavailable"

    assert len(attempts) > 1
    assert sum("cannot hold a slot" in record.getMessage() for record in caplog.records) == 1
