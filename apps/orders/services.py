"""Order write services."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from apps.orders.models import Order


def order_place(*, owner: AbstractBaseUser, sku: str, quantity: int) -> Order:
    """Place an order for ``owner``; input is validated by the caller's serializer and the DB constraints."""
    with transaction.atomic():
        return Order.objects.create(owner=owner, sku=sku, quantity=quantity)
