"""The API is strict: wrong JSON types, unknown fields and invalid query parameters are 400 field errors.

issue 15 §0: POST /api/orders/ accepted ``"quantity": "3"`` and ``"status": "reserved"`` silently, and
list endpoints accepted ``page=false`` and a repeated ``page_size``.
"""

from __future__ import annotations

import pytest

from apps.orders.models import Order, Product
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db

ORDERS = "/api/orders/"
LIST_URLS = ["/api/orders/", "/api/flags/", "/api/outbox/messages/"]


def field_errors(response, status: int = 400) -> dict[str, str]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "urn:taskplane:problem:validation-error"
    return {error["field"]: error["code"] for error in response.json()["errors"]}


@pytest.fixture
def superuser_client(django_user_model):
    from rest_framework.test import APIClient

    from apps.core.api_keys import api_key_create

    django_user_model.objects.create_superuser(username="root", password="x")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(username='root')[1]}")
    return client


@pytest.mark.parametrize(("body", "field"), [
    ({"sku": "PEN-1", "quantity": "3"}, "quantity"),
    ({"sku": "PEN-1", "quantity": 3.5}, "quantity"),
    ({"sku": "PEN-1", "quantity": True}, "quantity"),
    ({"sku": 12, "quantity": 3}, "sku"),
    ({"sku": ["A"], "quantity": 3}, "sku"),
])
def test_a_value_of_the_wrong_json_type_is_refused_not_converted(api_client, body, field):
    """issue 15 §0: "quantity": "3" was accepted as 3."""
    assert field_errors(api_client.post(ORDERS, body, format="json")) == {field: "wrong_type"}
    assert not Order.objects.exists()


def test_an_integral_number_is_an_integer_as_json_schema_says(api_client):
    response = api_client.post(ORDERS, b'{"sku": "PEN-1", "quantity": 3.0}', content_type="application/json")

    assert response.status_code == 201, response.content
    assert response.json()["quantity"] == 3


def test_an_unknown_field_is_refused_not_ignored(api_client):
    """issue 15 §0: "status": "reserved" was dropped silently and the order placed."""
    response = api_client.post(ORDERS, {"sku": "PEN-1", "quantity": 3, "status": "reserved"}, format="json")

    assert field_errors(response) == {"status": "unknown_field"}
    assert not Order.objects.exists()


def test_text_is_kept_exactly_as_sent(api_client):
    Product.objects.create(sku="  A  ", name="Spaced", price_cents=100, stock=1)
    response = api_client.post(ORDERS, {"sku": "  A  ", "quantity": 1}, format="json")

    assert response.status_code == 201
    assert Order.objects.get().sku == "  A  "


@pytest.mark.parametrize("url", LIST_URLS)
@pytest.mark.parametrize(("query", "field", "code"), [
    ("page=false", "page", "wrong_type"),
    ("page=1.0", "page", "wrong_type"),
    ("page=0", "page", "min_value"),
    ("page=1000001", "page", "max_value"),
    ("page_size=0", "page_size", "min_value"),
    ("page_size=201", "page_size", "max_value"),
    ("page_size=%2010", "page_size", "wrong_type"),
    ("page_size=10&page_size=20", "page_size", "repeated"),
    ("page=1&page=1", "page", "repeated"),
    ("pgae=2", "pgae", "unknown_field"),
])
def test_invalid_query_parameters_of_list_endpoints_are_400(superuser_client, url, query, field, code):
    """issue 15 §0: page=false and two page_size were accepted (the first fell back to page 1)."""
    assert field_errors(superuser_client.get(f"{url}?{query}")) == {field: code}


def test_filters_are_checked_as_strictly_as_pages(superuser_client):
    errors = field_errors(superuser_client.get("/api/outbox/messages/?status=dead&status=pending&stauts=dead"))

    assert errors == {"status": "repeated", "stauts": "unknown_field"}


def test_valid_pages_still_page(superuser_client):
    for index in range(3):
        OutboxMessage.objects.create(kind="event", name=f"topic.{index}", key="k", queue="q", payload="{}")

    body = superuser_client.get("/api/outbox/messages/?page=2&page_size=2&format=json").json()

    assert (body["count"], body["count_estimated"], len(body["results"])) == (3, False, 1)
    assert body["next"] is None and "page=" not in body["previous"] and "page_size=2" in body["previous"]
