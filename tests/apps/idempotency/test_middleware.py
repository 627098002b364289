"""Idempotency-Key semantics through the full middleware stack (Django test client, real PostgreSQL)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.core.api_keys import api_key_create
from apps.idempotency.models import IdempotencyRecord
from apps.orders.models import Order
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db(transaction=True)
ORDER = {"sku": "BOOK-1", "quantity": 2}


def post(client, body=ORDER, key="key-1", **headers):
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post("/api/orders/", body, format="json", **headers)


def test_first_request_runs_and_the_retry_replays_it_byte_for_byte(api_client):
    first = post(api_client)
    retry = post(api_client)

    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content
    assert retry["Location"] == first["Location"] and retry["Content-Type"] == first["Content-Type"]
    assert retry["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert first["Idempotency-Key"] == retry["Idempotency-Key"] == "key-1"
    assert Order.objects.count() == 1
    assert OutboxMessage.objects.filter(name="order.placed").count() == 1


def test_quoted_structured_field_form_is_the_same_key(api_client):
    post(api_client, key="abc")
    assert post(api_client, key='"abc"')["Idempotent-Replayed"] == "true"


def test_same_key_with_a_different_body_is_422(api_client):
    post(api_client)
    response = post(api_client, body={"sku": "OTHER", "quantity": 2})

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response["Idempotency-Key"] == "key-1"
    assert Order.objects.count() == 1


def test_json_key_order_does_not_change_the_fingerprint(api_client):
    post(api_client, body={"sku": "PEN-1", "quantity": 1})
    response = api_client.post("/api/orders/", data='{"quantity": 1, "sku": "PEN-1"}', content_type="application/json",
                               HTTP_IDEMPOTENCY_KEY="key-1")
    assert response["Idempotent-Replayed"] == "true"


def test_keys_are_scoped_per_user(api_client, other_user):
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(username=other_user.username)[1]}")

    mine, theirs = post(api_client), post(other)

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert not theirs.has_header("Idempotent-Replayed")


def test_in_flight_duplicate_is_409_with_retry_after(api_client, user):
    post(api_client, key="busy")
    IdempotencyRecord.objects.filter(key="busy").update(state="in_flight")

    response = post(api_client, key="busy")

    assert response.status_code == 409 and response["Retry-After"] == "1"
    assert response["Content-Type"] == "application/problem+json"


def test_expired_lease_is_reclaimed_and_the_late_original_cannot_complete(api_client, settings):
    from apps.idempotency.records import LostOwnership, record_complete

    post(api_client, key="crashed")
    record = IdempotencyRecord.objects.get(key="crashed")
    old_token = record.attempt_token
    Order.objects.all().delete()
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        state="in_flight", locked_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS + 1)
    )

    retry = post(api_client, key="crashed")

    assert retry.status_code == 201 and not retry.has_header("Idempotent-Replayed")
    assert Order.objects.count() == 1
    with pytest.raises(LostOwnership):
        record_complete(scope=record.scope_hash, token=old_token, response=retry, headers={})


@pytest.mark.parametrize("raw", ["", "x" * 256, "naïve", '"unterminated', '"bad\\escape"', '"a"b"'])
def test_malformed_keys_are_400(api_client, raw):
    response = post(api_client, key=raw)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert Order.objects.count() == 0


def test_a_required_key_that_is_missing_is_400(api_client, settings):
    settings.IDEMPOTENCY_REQUIRED_PATHS = [r"^/api/orders/$"]
    from apps.idempotency import middleware

    response = middleware.IdempotencyMiddleware(lambda r: None).process_view(
        _request("/api/orders/"), _view, (), {}
    )
    assert response.status_code == 400
    assert json.loads(response.content)["type"] == "urn:taskplane:problem:idempotency-key-required"


def test_validation_errors_from_the_view_are_stored_and_replayed(api_client):
    first = post(api_client, body={"sku": "", "quantity": 1}, key="bad")
    retry = post(api_client, body={"sku": "", "quantity": 1}, key="bad")

    assert first.status_code == retry.status_code == 400
    assert retry["Idempotent-Replayed"] == "true" and json.loads(retry.content)["errors"]


def test_rejections_before_the_view_are_not_stored(client):
    response = client.post("/api/orders/", ORDER, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k",
                           HTTP_AUTHORIZATION="Bearer tp_wrongwrongwrongwrongwrong")

    assert response.status_code == 401
    assert not IdempotencyRecord.objects.exists()


def test_throttled_requests_are_not_stored(api_client, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"principal": "1/min", "anonymous": "1/min"}}
    post(api_client, key="one")
    response = post(api_client, key="two")

    assert response.status_code == 429
    assert not IdempotencyRecord.objects.filter(key="two").exists()


def test_encrypted_storage_replays_the_same_bytes(api_client, settings):
    from cryptography.fernet import Fernet

    settings.FERNET_KEYS = [Fernet.generate_key().decode()]
    settings.IDEMPOTENCY_ENCRYPT_RESPONSES = True
    first = post(api_client, key="secret")
    record = IdempotencyRecord.objects.get(key="secret")

    assert b"BOOK-1" not in bytes(record.response_body)
    assert post(api_client, key="secret").content == first.content


def test_session_users_are_a_principal_too(user):
    client = APIClient(enforce_csrf_checks=False)
    client.force_login(user)
    assert post(client, key="s").status_code == 201
    assert post(client, key="s")["Idempotent-Replayed"] == "true"


def test_purge_removes_expired_records(api_client):
    from apps.idempotency.records import records_purge

    post(api_client, key="old")
    post(api_client, key="new")
    IdempotencyRecord.objects.filter(key="old").update(expires_at=timezone.now() - timedelta(seconds=1))

    assert records_purge() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def _view(request):
    raise AssertionError("must not run")


def _request(path):
    from django.test import RequestFactory

    return RequestFactory().post(path, data="{}", content_type="application/json")
