"""Product catalog services and selectors: the SKUs orders may be placed for."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from apps.core.errors import InvalidInput
from apps.orders.models import Product


def product_list() -> QuerySet[Product]:
    """Return every product, by SKU."""
    return Product.objects.order_by("sku")


class UnknownSku(InvalidInput):
    """An order names a SKU that is not in the catalog."""

    title, slug = "Unknown SKU", "unknown-sku"


def product_price_cents(*, sku: str) -> int:
    """Return the catalog price of ``sku``; raises UnknownSku (a 400 naming the field) when it is not listed."""
    price = Product.objects.filter(sku=sku).values_list("price_cents", flat=True).first()
    if price is None:
        raise UnknownSku(f"No product with SKU {sku!r} is in the catalog.",
                         errors=[{"field": "sku", "message": "Not in the catalog (GET /api/products/).",
                                  "code": "unknown_sku"}])
    return price


def product_set(
    *, sku: str, name: str | None = None, price_cents: int | None = None, stock: int | None = None,
    if_missing: bool = False,
) -> tuple[Product, bool]:
    """Create the product or update the given fields; returns (product, created).

    ``if_missing``: only create it; an existing product is left as it is (seeding that never undoes an
    operator's price or stock change).
    """
    if not sku:
        raise InvalidInput("A SKU must not be empty.")
    for label, value in (("price_cents", price_cents), ("stock", stock)):
        if value is not None and value < 0:
            raise InvalidInput(f"{label} must not be negative.")
    changes = {key: value for key, value in (("name", name), ("price_cents", price_cents), ("stock", stock))
               if value is not None}
    with transaction.atomic():
        product = Product.objects.select_for_update().filter(sku=sku).first()
        if product is None:
            if name is None or price_cents is None:
                raise InvalidInput(f"A new product needs --name and --price-cents (SKU {sku!r}).")
            return Product.objects.create(sku=sku, **{"stock": 0, **changes}), True
        if if_missing:
            return product, False
        for key, value in changes.items():
            setattr(product, key, value)
        product.save()
    return product, False
