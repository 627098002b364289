"""Who a keyed request acts for: authentication and permissions come first, and the key is scoped to the
principal the view itself authenticates (real PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from apps.core.api_keys import api_key_create
from apps.idempotency.models import IdempotencyRecord
from apps.orders.models import Order
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db(transaction=True)
MALFORMED = "naïve"  # not printable ASCII


def _type(response) -> str:
    return json.loads(response.content)["type"]


@pytest.mark.parametrize("authorization", [None, "Bearer tp_wrongwrongwrongwrongwrong"], ids=["none", "bad-key"])
def test_a_malformed_key_from_an_unauthenticated_caller_is_401(client, authorization):
    """issue 15 §0: a malformed Idempotency-Key was answered 400 before authentication."""
    headers = {"HTTP_IDEMPOTENCY_KEY": MALFORMED}
    if authorization:
        headers["HTTP_AUTHORIZATION"] = authorization

    response = client.post("/api/orders/", {"sku": "PEN-1", "quantity": 1}, content_type="application/json", **headers)

    assert response.status_code == 401, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.has_header("WWW-Authenticate")
    assert not IdempotencyRecord.objects.exists()


def test_a_malformed_key_from_a_non_staff_caller_on_a_staff_endpoint_is_403(api_client):
    """issue 15 §0: a non-staff caller got 400 (not 403) for a malformed key on a staff endpoint."""
    response = api_client.post("/api/outbox/messages/1/retry/", HTTP_IDEMPOTENCY_KEY=MALFORMED)

    assert response.status_code == 403, response.content
    assert not IdempotencyRecord.objects.exists()


def test_a_missing_required_key_from_an_unauthenticated_caller_is_401(client, settings):
    """issue 15 §0: the key checks come after authentication, the required-key check too."""
    settings.IDEMPOTENCY_REQUIRED_PATHS = [r"^/api/orders/$"]

    response = client.post("/api/orders/", {"sku": "PEN-1", "quantity": 1}, content_type="application/json")

    assert response.status_code == 401


def test_a_malformed_key_from_an_authorized_caller_is_still_400(django_user_model):
    django_user_model.objects.create_superuser(username="root", password="not-used-here")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(username='root')[1]}")

    response = client.post("/api/outbox/messages/1/retry/", HTTP_IDEMPOTENCY_KEY=MALFORMED)

    assert response.status_code == 400
    assert _type(response) == "urn:taskplane:problem:idempotency-key-malformed"
    assert not response.has_header("Idempotency-Key")


@pytest.mark.urls("tests.apps.idempotency.views")
def test_the_key_is_scoped_to_the_principal_the_view_authenticates(user, other_user, api_key):
    """issue 15 §0/§1: the middleware guessed the principal from the Bearer header, while a view with its
    own authenticators (session only here) acted for someone else: bob's response was stored under
    alice's scope and replayed to alice."""
    as_bob = APIClient()
    as_bob.force_login(other_user)
    as_bob.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")  # alice's key: the view ignores it
    as_alice = APIClient()
    as_alice.force_login(user)
    as_alice.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")

    bobs = as_bob.post("/api/idem-test/session-only/", {}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    alices = as_alice.post("/api/idem-test/session-only/", {}, format="json", HTTP_IDEMPOTENCY_KEY="shared")

    assert bobs.status_code == alices.status_code == 201
    assert bobs.json()["user"] == "bob"
    assert alices.json()["user"] == "alice", "alice got bob's stored response"
    assert not alices.has_header("Idempotent-Replayed")
    assert sorted(IdempotencyRecord.objects.values_list("user__username", flat=True)) == ["alice", "bob"]


@pytest.mark.urls("tests.apps.idempotency.views")
def test_a_principal_that_changes_between_claim_and_view_stores_nothing_and_rolls_back(user, other_user):
    """issue 15 §0 (review of the claim): a response is only stored under the principal that claimed the
    key. If the view authenticates someone else, its writes roll back and the key is released."""
    client = APIClient()

    response = client.post("/api/idem-test/principal-changes/", {}, format="json", HTTP_IDEMPOTENCY_KEY="p-1")

    assert response.status_code == 409, response.content
    assert _type(response) == "urn:taskplane:problem:idempotency-key-principal-changed"
    assert response["Retry-After"] == "1"
    assert not Order.objects.exists()
    assert not OutboxMessage.objects.exists()
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_are_untouched(api_client, method):
    """Guard for issue 15 §0: GET, HEAD and OPTIONS with a key (even a malformed one) are not tracked."""
    for raw in ("safe-1", MALFORMED):
        response = api_client.generic(method, "/api/orders/", HTTP_IDEMPOTENCY_KEY=raw)
        assert response.status_code == 200, response.content
        assert not response.has_header("Idempotency-Key")
        assert not response.has_header("Idempotent-Replayed")
    assert not IdempotencyRecord.objects.exists()
