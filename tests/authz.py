"""Users for authorization tests: staff members in the operator groups (apps/core/groups.py), and their clients."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from apps.core.api_keys import api_key_create
from apps.idempotency.models import IdempotencyRecord


def staff_member(username: str, *, group: str | None = None):
    """A staff user (may log in to admin) in ``group`` ("operators", "viewers") or in none, with no permission."""
    user = get_user_model().objects.create_user(username=username, password="not-used-here", is_staff=True)
    if group is not None:
        user.groups.add(Group.objects.get(name=group))
    return user


def key_client(user) -> APIClient:
    """An API client authenticated with a new API key of ``user``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(username=user.get_username())[1]}")
    return client


def session_client(user) -> APIClient:
    """An API client logged in as ``user`` (session cookie, as the browsable API and admin use)."""
    client = APIClient()
    client.force_login(user)
    return client


def idempotency_record(user, key: str = "key-1") -> IdempotencyRecord:
    """A completed idempotency record of ``user``, as admin's Purge action finds them."""
    now = timezone.now()
    return IdempotencyRecord.objects.create(
        scope_hash=uuid.uuid4().hex, user=user, key=key, method="POST", path="/api/orders/", fingerprint="f" * 64,
        state=IdempotencyRecord.State.COMPLETED, attempt_token=uuid.uuid4(), locked_at=now, created_at=now,
        completed_at=now, expires_at=now + timedelta(hours=1), response_status=201,
    )
