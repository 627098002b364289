"""Product catalog services and selectors: the SKUs orders may be placed for."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from apps.core.errors import InvalidInput
from apps.orders.models import Product


def product_list() -> QuerySet[Product]:
    """Return every product, by SKU."""
    return Product.objects.order_by("sku")


def product_price_cents(*, sku: str) -> int:
    """Return the catalog price of ``sku``; 0 for a SKU not in the catalog (rejecting those comes with checkout)."""
    price = Product.objects.filter(sku=sku).values_list("price_cents", flat=True).first()
    return price or 0


def product_set(
    *, sku: str, name: str | None = None, price_cents: int | None = None, stock: int | None = None
) -> tuple[Product, bool]:
    """Create the product or update the given fields; returns (product, created)."""
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
        for key, value in changes.items():
            setattr(product, key, value)
        product.save()
    return product, False
