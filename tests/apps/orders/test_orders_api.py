import pytest

from apps.orders.models import Order
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db


def test_create_order_returns_201_with_location(api_client, user):
    response = api_client.post("/api/orders/", {"sku": "BOOK-1", "quantity": 3}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["sku"] == "BOOK-1" and body["quantity"] == 3 and body["status"] == "pending"
    assert set(body) == {"id", "sku", "quantity", "amount_cents", "status", "cancel_reason", "created_at"}
    assert response["Location"].endswith(f"/api/orders/{body['id']}/")
    assert Order.objects.get(pk=body["id"]).owner == user


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"sku": "", "quantity": 1}, "sku"),
        ({"sku": "x" * 65, "quantity": 1}, "sku"),
        ({"sku": "A", "quantity": 0}, "quantity"),
        ({"sku": "A", "quantity": 1001}, "quantity"),
        ({"sku": "A", "quantity": "many"}, "quantity"),
        ({"quantity": 1}, "sku"),
        ({"sku": "bad\x00sku", "quantity": 1}, "sku"),
    ],
)
def test_invalid_order_is_a_400_problem_and_writes_nothing(api_client, payload, field):
    response = api_client.post("/api/orders/", payload, format="json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert field in {error["field"] for error in response.json()["errors"]}
    assert Order.objects.count() == 0


def test_an_unknown_sku_is_a_400_naming_the_field_and_saves_nothing(api_client):
    response = api_client.post("/api/orders/", {"sku": "NOT-LISTED", "quantity": 1}, format="json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:taskplane:problem:unknown-sku" and body["title"] == "Unknown SKU"
    assert body["errors"] == [{"field": "sku", "message": "Not in the catalog (GET /api/products/).",
                               "code": "unknown_sku"}]
    assert Order.objects.count() == 0 and not OutboxMessage.objects.exists()


def test_list_is_paginated_newest_first_and_only_mine(api_client, user, other_user):
    Order.objects.create(owner=other_user, sku="THEIRS", quantity=1)
    for index in range(3):
        Order.objects.create(owner=user, sku=f"MINE-{index}", quantity=1)

    response = api_client.get("/api/orders/?page_size=2")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [order["sku"] for order in body["results"]] == ["MINE-2", "MINE-1"]
    assert body["next"] is not None


def test_detail_of_another_users_order_is_404(api_client, user, other_user):
    mine = Order.objects.create(owner=user, sku="MINE", quantity=1)
    theirs = Order.objects.create(owner=other_user, sku="THEIRS", quantity=1)

    assert api_client.get(f"/api/orders/{mine.pk}/").json()["sku"] == "MINE"
    response = api_client.get(f"/api/orders/{theirs.pk}/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_huge_id_is_a_404_not_a_database_error(api_client):
    response = api_client.get("/api/orders/99999999999999999999999/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
