"""Every error under /api/ is RFC 9457 problem+json with a request id; never HTML."""

import pytest
from django.test import override_settings

from apps.orders import views as order_views

pytestmark = pytest.mark.django_db

PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id"}


def assert_problem(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert PROBLEM_FIELDS <= set(body)
    assert body["status"] == status
    assert body["request_id"] == response["X-Request-ID"]
    return body


def test_unauthenticated_is_401_with_bearer_challenge(client):
    response = client.get("/api/orders/")

    body = assert_problem(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert body["instance"] == "/api/orders/"


BAD_HEADERS = ["Bearer tp_not-a-real-key-aaaaaaaaaaaaaaaaaaaaa", "Bearer", "Bearer a b", "Basic Zm9vOmJhcg=="]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_bad_credentials_are_401(client, header):
    assert_problem(client.get("/api/orders/", HTTP_AUTHORIZATION=header), 401)


def test_unknown_api_path_is_404_problem(api_client):
    assert_problem(api_client.get("/api/does-not-exist/"), 404)


def test_wrong_method_is_405_problem_with_allow(api_client):
    response = api_client.delete("/api/orders/")

    assert_problem(response, 405)
    assert "POST" in response["Allow"]


def test_malformed_json_is_400_problem(api_client):
    response = api_client.post("/api/orders/", data="{not json", content_type="application/json")

    body = assert_problem(response, 400)
    assert "JSON" in body["detail"]


def test_wrong_content_type_is_415_problem(api_client):
    assert_problem(api_client.post("/api/orders/", data="sku=a", content_type="text/plain"), 415)


def test_unacceptable_accept_is_406_problem(api_client):
    assert_problem(api_client.get("/api/orders/", HTTP_ACCEPT="application/xml"), 406)


def test_validation_problem_lists_field_errors(api_client):
    body = assert_problem(api_client.post("/api/orders/", {"sku": "", "quantity": 0}, format="json"), 400)

    assert body["type"] == "urn:taskplane:problem:validation-error"
    assert {error["field"] for error in body["errors"]} == {"sku", "quantity"}


def test_unhandled_exception_is_500_problem_without_stack_trace(api_client, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(order_views, "order_place", explode)
    response = api_client.post("/api/orders/", {"sku": "A", "quantity": 1}, format="json")

    body = assert_problem(response, 500)
    assert "secret internals" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert body["detail"].startswith("An unexpected error occurred")


def test_throttled_key_gets_429_with_retry_after(api_client):
    rates = {"principal": "2/min", "anonymous": "2/min"}
    with override_settings(REST_FRAMEWORK={**_rest_framework(), "DEFAULT_THROTTLE_RATES": rates}):
        statuses = [api_client.get("/api/orders/").status_code for _ in range(3)]
        response = api_client.get("/api/orders/")

    assert statuses == [200, 200, 429]
    assert_problem(response, 429)
    assert int(response["Retry-After"]) >= 1


def test_throttle_is_per_key(api_client, other_user):
    from rest_framework.test import APIClient

    from apps.core.api_keys import api_key_create

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(username=other_user.username)[1]}")
    rates = {"principal": "1/min", "anonymous": "1/min"}
    with override_settings(REST_FRAMEWORK={**_rest_framework(), "DEFAULT_THROTTLE_RATES": rates}):
        assert api_client.get("/api/orders/").status_code == 200
        assert api_client.get("/api/orders/").status_code == 429
        assert other.get("/api/orders/").status_code == 200


def test_request_id_is_echoed_or_generated(api_client):
    echoed = api_client.get("/api/orders/", HTTP_X_REQUEST_ID="client-id-123")
    generated = api_client.get("/api/orders/", HTTP_X_REQUEST_ID="bad id with spaces\t")

    assert echoed["X-Request-ID"] == "client-id-123"
    assert generated["X-Request-ID"] != "bad id with spaces\t"
    assert len(generated["X-Request-ID"]) == 32


def test_csrf_failure_for_session_post_is_a_problem(user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/api/orders/", {"sku": "A", "quantity": 1}, content_type="application/json")

    assert_problem(response, 403)


def _rest_framework():
    from django.conf import settings

    return dict(settings.REST_FRAMEWORK)
