"""Small database-vendor differences, handled in one place."""

from __future__ import annotations

import uuid

from django.db import connection


def uuid_param(value: uuid.UUID | str) -> uuid.UUID | str:
    """A UUID as a raw-SQL parameter: SQLite stores Django's UUIDField as 32 hex digits, PostgreSQL as uuid."""
    if connection.vendor == "sqlite":
        return value.hex if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).hex
    return value


def uuid_text(value: object) -> str:
    """A UUID read by raw SQL, as its canonical 36-character text on every vendor."""
    text = str(value)
    return text if len(text) == 36 else str(uuid.UUID(text))
