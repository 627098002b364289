"""Which answers the idempotency middleware keeps, and what a retry gets back (real PostgreSQL and Redis).

The views (tests/apps/idempotency/views.py) place an order before answering, so every test also
sees whether the view's writes committed.
"""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings as django_settings

from apps.core.resilience import DistributedBulkhead, DistributedLock
from apps.idempotency.models import IdempotencyRecord
from apps.orders.models import Order
from apps.outbox.models import OutboxMessage
from tests.apps.idempotency import views

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.apps.idempotency.views")]
PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def _resilience_state():
    """The breaker, bulkhead and lock live in the resilience Redis database: start from nothing."""
    redis.Redis.from_url(django_settings.RESILIENCE_REDIS_URL).flushdb()


def _post(client, kind: str, key: str = "k-1"):
    return client.post(f"/api/idem-test/{kind}/", {}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def _type(response) -> str:
    return json.loads(response.content)["type"]


def _retry_runs_again(client, kind: str, key: str = "k-1") -> None:
    """Once the dependency is back, the same key runs the view (the earlier answer was not kept)."""
    retry = _post(client, kind, key)
    assert retry.status_code == 201, retry.content
    assert not retry.has_header("Idempotent-Replayed")
    assert Order.objects.count() == 1
    assert IdempotencyRecord.objects.get().state == IdempotencyRecord.State.COMPLETED


def test_a_500_is_not_kept_and_the_views_writes_roll_back(api_client):
    """issue 15 §13: a 500 was stored (replayed for 24 h) and the view's partial writes committed with it."""
    first = _post(api_client, "crash")
    second = _post(api_client, "crash")

    assert first.status_code == second.status_code == 500
    assert first["Content-Type"] == PROBLEM
    assert not second.has_header("Idempotent-Replayed")  # it ran again: the 500 was not kept
    assert not Order.objects.exists()
    assert not OutboxMessage.objects.exists()
    assert not IdempotencyRecord.objects.exists()


def test_a_503_circuit_open_with_retry_after_is_not_kept(api_client):
    """issue 15 §13: a 503 with Retry-After (open circuit) was stored; the retry must run once it closes."""
    views.BREAKER.record_failure(views.BREAKER.allow())  # threshold 1: the circuit is open now

    refused = _post(api_client, "circuit-open")

    assert refused.status_code == 503 and refused.has_header("Retry-After")
    assert _type(refused) == "urn:taskplane:problem:circuit-open"
    assert not Order.objects.exists() and not IdempotencyRecord.objects.exists()
    redis.Redis.from_url(django_settings.RESILIENCE_REDIS_URL).flushdb()  # the circuit closes
    _retry_runs_again(api_client, "circuit-open")


@pytest.mark.parametrize(("kind", "status", "problem", "held"), [
    ("bulkhead-full", 503, "bulkhead-full", lambda: DistributedBulkhead(views.BULKHEAD_NAME, 1).slot()),
    ("locked", 409, "lock-not-acquired", lambda: DistributedLock(views.LOCK_NAME, ttl=30)),
], ids=["503-bulkhead-full", "409-lock-conflict"])
def test_a_full_bulkhead_or_a_lock_conflict_is_not_kept(api_client, kind, status, problem, held):
    """issue 15 §13: a 503 from a full bulkhead and the resilience kit's 409 (lock held elsewhere) were
    stored; the retry must run once the slot or the lock is free. Both are held here for real."""
    with held():
        refused = _post(api_client, kind)

    assert refused.status_code == status
    assert _type(refused) == f"urn:taskplane:problem:{problem}"
    assert not Order.objects.exists() and not IdempotencyRecord.objects.exists()
    _retry_runs_again(api_client, kind)


def test_a_4xx_from_an_exception_is_kept_but_the_views_writes_roll_back(api_client):
    """issue 15 §13: DRF's set_rollback does nothing without ATOMIC_REQUESTS, so the writes a view made
    before raising a validation error committed with the stored 400. The middleware owns the
    transaction: the writes roll back, the 400 is kept and replayed."""
    first = _post(api_client, "invalid")
    retry = _post(api_client, "invalid")

    assert first.status_code == retry.status_code == 400
    assert retry["Idempotent-Replayed"] == "true" and retry.content == first.content
    assert not Order.objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(("kind", "reason"), [("big", "too-large"), ("streaming", "streaming")])
def test_a_response_too_large_or_streamed_keeps_the_key_and_replays_result_not_kept(
    api_client, settings, kind, reason
):
    """issue 15 §13: a response too large to store released the key although its effect had committed,
    so the retry ran the view again (a second order). Now a status-only record answers the retry."""
    settings.IDEMPOTENCY_MAX_RESPONSE_BYTES = views.BIG_BODY_BYTES // 2

    first = _post(api_client, kind)
    retry = _post(api_client, kind)

    assert first.status_code == 201
    assert first["Idempotency-Key-Status"] == f"not-stored; reason={reason}"
    assert Order.objects.count() == 1  # the first run's effect committed, and the retry did not repeat it
    assert retry.status_code == 409
    assert retry["Content-Type"] == PROBLEM
    assert retry["Idempotent-Replayed"] == "true" and retry["Idempotency-Key"] == "k-1"
    body = json.loads(retry.content)
    assert body["type"] == "urn:taskplane:problem:idempotency-key-result-not-kept"
    assert "201" in body["detail"]
    assert not retry.has_header("Retry-After")  # retrying will not bring the result back
    assert _post(api_client, kind).content == retry.content  # and it stays that way


def test_a_replayed_204_has_no_content_type_and_exactly_the_stored_headers(api_client):
    """issue 15 §0: a replayed 204 gained the Content-Type (text/html) the original did not have."""
    first = _post(api_client, "empty")
    retry = _post(api_client, "empty")

    assert first.status_code == retry.status_code == 204
    assert not first.has_header("Content-Type")
    assert retry["Idempotent-Replayed"] == "true"
    assert not retry.has_header("Content-Type")
    added_by_replay = {"Idempotent-Replayed"}
    assert set(retry.headers) - added_by_replay == set(first.headers)
    for name in ("Allow", "Vary"):
        assert retry[name] == first[name]


def test_a_replayed_204_from_the_flags_api_has_no_content_type(client, django_user_model):
    """issue 15 §0 (found by hand): DELETE /api/flags/{key}/ replayed with Content-Type: text/html."""
    from apps.core.api_keys import api_key_create
    from apps.flags.services import flag_save

    django_user_model.objects.create_superuser(username="root", password="not-used-here")
    key = api_key_create(username="root")[1]
    flag_save(definition={"key": "test.replayed-delete", "kind": "boolean", "enabled": True}, actor="test",
              reason="test")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}", "HTTP_IDEMPOTENCY_KEY": "delete-1"}

    first = client.delete("/api/flags/test.replayed-delete/?reason=cleanup", **headers)
    retry = client.delete("/api/flags/test.replayed-delete/?reason=cleanup", **headers)

    assert first.status_code == retry.status_code == 204, first.content
    assert retry["Idempotent-Replayed"] == "true"
    assert not first.has_header("Content-Type") and not retry.has_header("Content-Type")
