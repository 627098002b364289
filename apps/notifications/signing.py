"""Standard Webhooks signing: ``whsec_`` secrets and the ``webhook-*`` headers of one attempt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random_secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 24


def secret_generate() -> str:
    """A new signing secret: ``whsec_`` + base64 of 24 random bytes (the format Svix and the spec use)."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode()


def signature(*, secret: str, message_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed by the secret's decoded bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(*, secrets: list[str], message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three headers of an attempt; one signature per active secret, space-separated (newest first)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret=secret, message_id=message_id, timestamp=timestamp, body=body)
                                      for secret in secrets),
    }
