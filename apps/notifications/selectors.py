"""Reads of webhooks, scoped to the caller: owners see their own endpoints; staff by model permission.

Staff holding ``notifications.view_endpoint`` read every endpoint and its log (the ``viewers`` group);
``notifications.change_endpoint`` also lets them act on any endpoint (``operators``: enable, disable,
test, replay, recover). Secrets are the owner's alone, and deleting another's endpoint needs
``delete_endpoint`` (no group has it).
"""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Prefetch, QuerySet

from apps.core.errors import NotFound, PermissionDenied
from apps.core.permissions import model_permission
from apps.notifications.models import Attempt, Delivery, Endpoint, Message

READ, ACT, DELETE, OWNER = "view", "change", "delete", "owner"
ATTEMPTS_SHOWN = 20  # per delivery in the API; admin shows all


def endpoint_scope(*, user: AbstractBaseUser, access: str = READ) -> QuerySet[Endpoint]:
    """The endpoints ``user`` may read (or act on, delete) with ``access``."""
    if access != OWNER and user.is_staff and user.has_perm(model_permission(Endpoint, access)):
        return Endpoint.objects.all()
    return Endpoint.objects.filter(owner=user)


def endpoint_get(*, user: AbstractBaseUser, endpoint_id: uuid.UUID, access: str = READ) -> Endpoint:
    """The endpoint if ``user`` has ``access``; 404 when they cannot even read it, 403 when they only can."""
    endpoint = endpoint_scope(user=user, access=access).filter(pk=endpoint_id).first()
    if endpoint is not None:
        return endpoint
    if access != READ and endpoint_scope(user=user).filter(pk=endpoint_id).exists():
        needed = "its owner" if access == OWNER else model_permission(Endpoint, access)
        raise PermissionDenied(f"Only {needed} may do this to this endpoint.")
    raise NotFound(f"No webhook endpoint {endpoint_id}.")


def message_list(*, user: AbstractBaseUser, endpoint_id: uuid.UUID | None = None,
                 state: str | None = None) -> QuerySet[Message]:
    """Messages with a delivery to an endpoint the user reads, newest first, each with those deliveries."""
    deliveries = Delivery.objects.filter(endpoint__in=endpoint_scope(user=user))
    if endpoint_id is not None:
        deliveries = deliveries.filter(endpoint_id=endpoint_id)
    if state:
        deliveries = deliveries.filter(state=state)
    shown = deliveries.order_by("id").prefetch_related(
        Prefetch("attempt_log", queryset=Attempt.objects.order_by("-attempted_at", "-id")))
    return (Message.objects.filter(pk__in=deliveries.values("message_id"))
            .prefetch_related(Prefetch("deliveries", queryset=shown)).order_by("-created_at", "-id"))


def message_get(*, user: AbstractBaseUser, message_id: uuid.UUID) -> Message:
    """One message the user may read, with its deliveries to their endpoints."""
    message = message_list(user=user).filter(pk=message_id).first()
    if message is None:
        raise NotFound(f"No webhook message {message_id}.")
    return message
