"""Order read selectors: every query is scoped to the owner."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import QuerySet

from apps.core.errors import NotFound
from apps.orders.models import Order


def order_list(*, owner: AbstractBaseUser) -> QuerySet[Order]:
    """Return the owner's orders, newest first."""
    return Order.objects.filter(owner=owner).order_by("-created_at", "-id")


def order_get(*, owner: AbstractBaseUser, order_id: int) -> Order:
    """Return one of the owner's orders; another user's order is reported as not found."""
    order = Order.objects.filter(owner=owner, pk=order_id).first()
    if order is None:
        raise NotFound(f"Order {order_id} not found.")
    return order
