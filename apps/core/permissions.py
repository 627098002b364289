"""Staff API authorization: the model permissions admin checks, required per HTTP method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.contrib.auth import get_permission_codename
from django.db.models import Model
from rest_framework import exceptions
from rest_framework.permissions import BasePermission


class StaffModelPermissions(BasePermission):
    """Lets through a staff user holding every permission the view requires for the request's method.

    A view lists them as ``required_permissions = {"GET": ["outbox.view_outboxmessage"], "POST": [...]}``.
    Unlike DRF's DjangoModelPermissions, a read requires the model's ``view`` permission, and an action
    names the permission admin requires for it (e.g. retry needs ``change``), so the API grants exactly
    what admin does. Superusers hold every permission; anonymous callers get 401, others 403.
    """

    message = "You do not have permission to perform this action."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff):
            return False
        required = required_permissions(view, request.method)
        missing = [name for name in required if not user.has_perm(name)]
        if missing:
            self.message = f"This needs the permission(s) {', '.join(missing)}."
            return False
        return True


def required_permissions(view, method: str) -> Sequence[str]:
    """The permissions ``view`` requires for ``method`` (405 for a method it does not list)."""
    table: Mapping[str, Sequence[str]] = view.required_permissions
    method = method.upper()
    if method in table:
        return table[method]
    if method == "HEAD" and "GET" in table:
        return table["GET"]
    if method == "OPTIONS" and table:
        # Describing an endpoint needs what reading it needs, or (action-only endpoints) using it.
        return table.get("GET", next(iter(table.values())))
    raise exceptions.MethodNotAllowed(method)


def model_permission(model: type[Model], action: str) -> str:
    """The full permission name admin checks for ``action`` (view, add, change, delete) on ``model``."""
    opts = model._meta
    return f"{opts.app_label}.{get_permission_codename(action, opts)}"
