"""An endpoint's signing secrets at rest (Fernet tokens) and which of them sign right now."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from apps.core.crypto import decrypt_text, encrypt_text
from apps.core.errors import TaskplaneError
from apps.notifications.models import Endpoint


class WebhooksUnavailable(TaskplaneError):
    status, title, slug = 503, "Webhooks unavailable", "webhooks-unavailable"


def secret_seal(*, secret: str) -> str:
    """The secret encrypted for storage; webhooks need FERNET_KEYS (a secret is never stored in plaintext)."""
    if not settings.FERNET_KEYS:
        raise WebhooksUnavailable("Webhook endpoints need FERNET_KEYS: their signing secrets are stored encrypted.")
    return encrypt_text(secret)


def endpoint_current_secret(*, endpoint: Endpoint) -> str:
    """The secret receivers should verify with (the newest)."""
    return decrypt_text(endpoint.secret)


def endpoint_active_secrets(*, endpoint: Endpoint) -> list[str]:
    """The secrets that sign an attempt now: the current one, and the previous one during its grace period."""
    active = [decrypt_text(endpoint.secret)]
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > timezone.now():
        active.append(decrypt_text(endpoint.previous_secret))
    return active
