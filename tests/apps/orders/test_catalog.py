import pytest
from django.core.management import CommandError, call_command

from apps.orders.models import Order, Product

pytestmark = pytest.mark.django_db


def test_order_amount_is_quantity_times_the_price_at_placing_time(api_client):
    product = Product.objects.get(sku="BOOK-1")  # the seeded catalog (tests/conftest.py): 1250 cents

    body = api_client.post("/api/orders/", {"sku": "BOOK-1", "quantity": 3}, format="json").json()
    product.price_cents = 9999
    product.save()

    assert body["amount_cents"] == 3750 and body["cancel_reason"] == ""
    assert Order.objects.get(pk=body["id"]).amount_cents == 3750


def test_products_are_listed_paginated_by_sku(api_client):
    Product.objects.all().delete()
    for sku in ("C", "A", "B"):
        Product.objects.create(sku=sku, name=f"Product {sku}", price_cents=100, stock=2)

    response = api_client.get("/api/products/?page_size=2")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3 and body["next"] is not None
    assert body["results"][0] == {"sku": "A", "name": "Product A", "price_cents": 100, "stock": 2}
    assert [row["sku"] for row in body["results"]] == ["A", "B"]


def test_products_need_authentication(client):
    response = client.get("/api/products/")

    assert response.status_code in (401, 403)
    assert response["Content-Type"] == "application/problem+json"


def test_catalog_set_creates_then_updates_only_given_fields(capsys):
    call_command("catalog", "set", "PEN", "--name", "Pen", "--price-cents", "199", "--stock", "10")
    call_command("catalog", "set", "PEN", "--stock", "4")

    product = Product.objects.get(sku="PEN")
    assert (product.name, product.price_cents, product.stock) == ("Pen", 199, 4)
    call_command("catalog", "list")
    assert "PEN\tPen\t199\t4" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["set", "NEW", "--stock", "3"],  # a new product needs a name and a price
        ["set", "NEW", "--name", "N", "--price-cents", "-1"],
        ["set", "NEW", "--name", "N", "--price-cents", "1", "--stock", "-2"],
    ],
)
def test_catalog_set_rejects_bad_input_and_writes_nothing(argv):
    with pytest.raises(CommandError):
        call_command("catalog", *argv)

    assert not Product.objects.filter(sku="NEW").exists()


def test_catalog_set_if_missing_creates_but_never_changes(capsys):
    call_command("catalog", "set", "MUG", "--name", "Mug", "--price-cents", "800", "--stock", "3", "--if-missing")
    call_command("catalog", "set", "MUG", "--name", "Other", "--price-cents", "1", "--stock", "99", "--if-missing")

    product = Product.objects.get(sku="MUG")
    assert (product.name, product.price_cents, product.stock) == ("Mug", 800, 3)
    assert capsys.readouterr().out.splitlines()[-1].startswith("Kept MUG")
