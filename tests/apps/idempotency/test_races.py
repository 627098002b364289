"""Both sides of every compare-and-set on an idempotency record, with the interleaving forced, on real
PostgreSQL: each side runs on its own connection (thread), and the loser is held at the exact point
where it used to go wrong (waiting on the winner's row lock, or paused inside its view)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.idempotency.keys import scope_hash
from apps.idempotency.models import IdempotencyRecord
from apps.idempotency.records import LostOwnership, record_claim, record_complete
from apps.orders.models import Order
from tests.apps.idempotency import views
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
DEADLINE = 30
ATTRS = {"user_id": None, "key": "race-1", "method": "POST", "path": "/api/race/", "fingerprint": "f" * 64}
SCOPE = scope_hash(principal="user:none", method="POST", path="/api/race/", key="race-1")


class Side(threading.Thread):
    """Run ``fn`` on a connection of its own; keep its result, its exception and its backend pid."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error, self.pid = fn, None, None, None
        self.connected = threading.Event()

    def run(self):
        try:
            connection.ensure_connection()
            self.pid = connection.connection.info.backend_pid
            self.connected.set()
            self.result = self.fn()
        except BaseException as exc:  # reported by finish()
            self.error = exc
        finally:
            connection.close()

    def finish(self):
        self.join(DEADLINE)
        assert not self.is_alive(), "a side of the race hung"
        return self.result


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def _expire_lease(scope: str) -> None:
    """Age the lease on the database clock, as a crashed owner would have left it."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {IdempotencyRecord._meta.db_table} SET locked_at = now() - make_interval(secs => %s) "
            "WHERE scope_hash = %s", [60 * 60, scope])


def _claim(scope: str = SCOPE):
    return record_claim(scope=scope, **ATTRS)


def test_a_take_over_loses_to_the_completion_it_raced():
    """issue 15 §1: a retry that read "in flight, lease expired" just before the original completed
    overwrote the completed record (its UPDATE checked only pk and token, which completion keeps),
    and the view ran a second time. The original's transaction holds the record's row lock, the
    retry reads the record and waits on that lock, then the original completes and commits."""
    original = _claim()
    assert original.outcome == "owned"
    _expire_lease(SCOPE)
    locked, commit = threading.Event(), threading.Event()

    def complete():
        with transaction.atomic():
            IdempotencyRecord.objects.select_for_update().get(scope_hash=SCOPE)
            locked.set()
            assert commit.wait(DEADLINE)
            record_complete(scope=SCOPE, token=original.token, response=HttpResponse(b'{"id": 7}', status=201),
                            headers={"Content-Type": "application/json"})

    completion = Side(complete)
    completion.start()
    assert locked.wait(DEADLINE)
    retry = Side(_claim)
    retry.start()
    assert retry.connected.wait(DEADLINE)
    wait_until(lambda: _waiting_on_a_lock(retry.pid), timeout=DEADLINE, interval=0.01,
               message="the retry's claim to wait for the original's row lock")
    commit.set()
    completion.finish()
    claim = retry.finish()

    assert completion.error is None and retry.error is None, (completion.error, retry.error)
    assert claim.outcome == "replay", "the retry took over a completed record and would run the view again"
    record = IdempotencyRecord.objects.get(scope_hash=SCOPE)
    assert record.state == IdempotencyRecord.State.COMPLETED
    assert record.attempt_token == original.token and record.response_status == 201
    assert bytes(record.response_body) == b'{"id": 7}'


def test_a_completion_loses_to_the_take_over_it_raced():
    """issue 15 §1, other side: once a retry has taken the record over, the original cannot complete."""
    original = _claim()
    _expire_lease(SCOPE)
    taken = threading.Event()

    def take_over_and_hold():
        with transaction.atomic():
            claim = _claim()
            taken.set()
            assert views.RELEASE.wait(DEADLINE)
        return claim

    views.RELEASE.clear()
    retry = Side(take_over_and_hold)
    retry.start()
    assert taken.wait(DEADLINE)

    def complete():
        with transaction.atomic():
            record_complete(scope=SCOPE, token=original.token, response=HttpResponse(b"late", status=201), headers={})

    completion = Side(complete)
    completion.start()
    assert completion.connected.wait(DEADLINE)
    wait_until(lambda: _waiting_on_a_lock(completion.pid), timeout=DEADLINE, interval=0.01,
               message="the original's completion to wait for the take-over's row lock")
    views.RELEASE.set()
    claim = retry.finish()
    completion.finish()

    assert retry.error is None and claim.outcome == "owned" and claim.reclaimed
    assert isinstance(completion.error, LostOwnership)
    record = IdempotencyRecord.objects.get(scope_hash=SCOPE)
    assert record.state == IdempotencyRecord.State.IN_FLIGHT and record.attempt_token == claim.token


@pytest.fixture
def held_client(api_client):
    """A client for the "created" view; requests sent with ``_held_original`` pause inside it."""
    views.ENTERED.clear()
    views.RELEASE.clear()
    yield api_client
    views.RELEASE.set()


def _post(client, **headers):
    return client.post("/api/idem-test/created/", {}, format="json", HTTP_IDEMPOTENCY_KEY="held-1", **headers)


def _held_original(client) -> Side:
    """Send the request from another thread (own client, same credentials); return once it has written."""
    own = APIClient()
    own.credentials(**client._credentials)
    original = Side(lambda: _post(own, HTTP_X_TEST_HOLD="1"))
    original.start()
    assert views.ENTERED.wait(DEADLINE), "the held request never reached its view"
    return original


@pytest.mark.urls("tests.apps.idempotency.views")
def test_an_original_superseded_mid_view_rolls_back_and_the_take_over_is_kept(held_client):
    """issue 15 §1 through the middleware: the original is paused inside its view (order written, not
    committed) while a retry takes over its expired lease and completes; the original then answers 409
    superseded and its order rolls back. One order, the retry's, is kept and replayed."""
    original = _held_original(held_client)
    _expire_lease(IdempotencyRecord.objects.get().scope_hash)
    retry = _post(held_client)
    views.RELEASE.set()
    late = original.finish()

    assert original.error is None, original.error
    assert retry.status_code == 201 and not retry.has_header("Idempotent-Replayed")
    assert late.status_code == 409
    assert late.json()["type"] == "urn:taskplane:problem:idempotency-key-superseded"
    assert list(Order.objects.values_list("pk", flat=True)) == [retry.json()["id"]]
    replay = _post(held_client)
    assert replay["Idempotent-Replayed"] == "true" and replay.content == retry.content


@pytest.mark.urls("tests.apps.idempotency.views")
@pytest.mark.parametrize("skew", [timedelta(hours=1), timedelta(days=2)], ids=["past-lease", "past-retention"])
def test_a_fast_app_clock_cannot_take_over_a_live_lease(held_client, monkeypatch, skew):
    """issue 15 §1: lease and retention were measured on the web process's clock, so a web server whose
    clock runs ahead took over a live lease and ran the view a second time."""
    original = _held_original(held_client)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + skew)

    duplicate = _post(held_client)

    monkeypatch.setattr(timezone, "now", real_now)
    views.RELEASE.set()
    first = original.finish()
    assert duplicate.status_code == 409, duplicate.content
    assert duplicate.json()["type"] == "urn:taskplane:problem:idempotency-key-in-flight"
    assert first.status_code == 201
    assert Order.objects.count() == 1


@pytest.mark.urls("tests.apps.idempotency.views")
def test_a_slow_app_clock_does_not_stamp_a_lease_that_looks_expired(held_client, monkeypatch):
    """issue 15 §1: the lease start was stamped with the web process's clock, so a process whose clock
    runs behind left a live lease that every other process saw as expired, and took over."""
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(hours=1))
    original = _held_original(held_client)
    monkeypatch.setattr(timezone, "now", real_now)

    duplicate = _post(held_client)

    views.RELEASE.set()
    first = original.finish()
    assert duplicate.status_code == 409, duplicate.content
    assert first.status_code == 201
    assert Order.objects.count() == 1


@pytest.mark.urls("tests.apps.idempotency.views")
def test_a_fast_app_clock_cannot_expire_a_completed_record(api_client, monkeypatch):
    """issue 15 §1: retention was measured on the web process's clock: a completed record looked expired
    to a web server whose clock runs ahead, which ran the request again instead of replaying it."""
    first = _post(api_client)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(days=2))

    retry = _post(api_client)

    assert retry.status_code == 201 and retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert Order.objects.count() == 1
