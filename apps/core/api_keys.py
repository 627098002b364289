"""API key services (create, revoke) and the selector that authenticates a presented key."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from apps.core.audit import Actor, operator_action_record
from apps.core.errors import InvalidInput, NotFound
from apps.core.models import ApiKey

KEY_PREFIX = "tp_"
PREFIX_LENGTH = 11  # "tp_" + 8 characters: enough to tell keys apart, useless to an attacker
# Recording every use would turn each read request into a write; minute resolution is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(raw_key: str) -> str:
    # Keys carry 256 bits of entropy, so a fast hash is safe; slow hashes exist for passwords.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, username: str, name: str = "") -> tuple[ApiKey, str]:
    """Create a key for ``username``; return the row and the raw key, which is never stored."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"No user named {username!r}.")
    if not user.is_active:
        raise InvalidInput(f"User {username!r} is inactive.")
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            user=user, name=name[:100], prefix=raw_key[:PREFIX_LENGTH], key_hash=_hash(raw_key)
        )
    return api_key, raw_key


def api_key_revoke(*, prefix: str, actor: Actor, reason: str = "") -> int:
    """Revoke every active key whose prefix matches exactly, audited; return how many were revoked."""
    if not prefix.startswith(KEY_PREFIX) or len(prefix) != PREFIX_LENGTH:
        raise InvalidInput(f"A key prefix looks like {KEY_PREFIX}xxxxxxxx ({PREFIX_LENGTH} characters).")
    revoked = _revoke(ApiKey.objects.filter(prefix=prefix), actor=actor, reason=reason)
    if not revoked:
        raise NotFound(f"No active key with prefix {prefix!r}.")
    return revoked


def api_keys_revoke(*, key_ids: list[int], actor: Actor, reason: str = "") -> int:
    """Revoke the given keys that are still active, audited; return how many were revoked."""
    return _revoke(ApiKey.objects.filter(pk__in=key_ids), actor=actor, reason=reason)


def _revoke(keys, *, actor: Actor, reason: str) -> int:
    with transaction.atomic():
        ids = list(keys.select_for_update().filter(revoked_at__isnull=True).order_by("pk").values_list("pk", flat=True))
        revoked = ApiKey.objects.filter(pk__in=ids).update(revoked_at=timezone.now())
        operator_action_record(actor=actor, action="api_key.revoke", target_type="core.apikey", target_ids=ids,
                               reason=reason)
    return revoked


def api_key_authenticate(*, raw_key: str) -> tuple[AbstractBaseUser, ApiKey] | None:
    """Return (user, key) for an active key of an active user, else None."""
    if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None
    api_key = (
        ApiKey.objects.select_related("user")
        .filter(key_hash=_hash(raw_key), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if api_key is None:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key.user, api_key
