"""Encryption at rest with MultiFernet: the first key in FERNET_KEYS encrypts, every key decrypts."""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from apps.core.errors import TaskplaneError


class EncryptionUnavailable(TaskplaneError):
    status, title, slug = 500, "Encryption unavailable", "encryption-unavailable"


@functools.cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise EncryptionUnavailable("FERNET_KEYS is not set, so nothing can be encrypted or decrypted.")
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.FERNET_KEYS))


def encrypt_text(text: str) -> str:
    """Encrypt ``text`` with the newest key."""
    return _current().encrypt(text.encode()).decode()


def decrypt_text(token: str) -> str:
    """Decrypt a token made with any configured key."""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise EncryptionUnavailable("No configured key decrypts this value (was its key removed?).") from exc


def rotate_token(token: str) -> str:
    """Re-encrypt a token with the newest key."""
    return _current().rotate(token.encode()).decode()
