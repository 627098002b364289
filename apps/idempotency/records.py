"""Claiming, completing and releasing idempotency records: PostgreSQL is the source of truth.

A claim commits on its own (so concurrent retries see it at once); the completion commits in the
same transaction as the view's writes, and only if this execution still owns the record.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.utils import timezone

from apps.core.crypto import decrypt_text, encrypt_text
from apps.core.db import uuid_param
from apps.core.purging import delete_in_batches
from apps.idempotency.models import IdempotencyRecord

TABLE = IdempotencyRecord._meta.db_table


@dataclass
class Claim:
    """The outcome of trying to claim a key."""

    outcome: str  # "owned", "replay", "in_flight", "mismatch"
    record: IdempotencyRecord | None = None
    token: uuid.UUID | None = None
    reclaimed: bool = False


class LostOwnership(Exception):
    """Another execution reclaimed the record; this one's writes must not commit."""


def record_claim(*, scope: str, user_id: int | None, key: str, method: str, path: str, fingerprint: str) -> Claim:
    """Claim the key for a new execution, or say why not (completed, running elsewhere, other request)."""
    now = timezone.now()
    token = uuid.uuid4()
    expires = now + timedelta(seconds=settings.IDEMPOTENCY_RETENTION_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(), [scope, user_id, key, method, path, fingerprint, uuid_param(token), now, now,
                                      expires, b""])
        inserted = cursor.fetchone()
    if inserted:
        return Claim("owned", token=token)
    record = IdempotencyRecord.objects.filter(scope_hash=scope).first()
    if record is None:  # purged between our insert and read: try once more
        return record_claim(scope=scope, user_id=user_id, key=key, method=method, path=path, fingerprint=fingerprint)
    if record.expires_at <= now:
        return _take_over(record, token, now, fingerprint=fingerprint, expires=expires, reclaimed=False)
    if record.fingerprint != fingerprint:
        return Claim("mismatch", record=record)
    if record.state == IdempotencyRecord.State.COMPLETED:
        return Claim("replay", record=record)
    lease = timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS)
    if record.locked_at + lease <= now:
        return _take_over(record, token, now, fingerprint=fingerprint, expires=expires, reclaimed=True)
    return Claim("in_flight", record=record)


def _take_over(
    record: IdempotencyRecord, token: uuid.UUID, now, *, fingerprint: str, expires, reclaimed: bool
) -> Claim:
    """Become the owner of an expired record or a crashed execution's record (conditional on its token)."""
    updated = IdempotencyRecord.objects.filter(pk=record.pk, attempt_token=record.attempt_token).update(
        state=IdempotencyRecord.State.IN_FLIGHT, attempt_token=token, locked_at=now, fingerprint=fingerprint,
        expires_at=expires, created_at=now if not reclaimed else record.created_at, completed_at=None,
        response_status=None, response_headers={}, response_body=b"", body_encrypted=False,
    )
    if not updated:  # someone else took it over first
        fresh = IdempotencyRecord.objects.filter(pk=record.pk).first()
        return Claim("in_flight", record=fresh)
    return Claim("owned", token=token, reclaimed=reclaimed)


def record_complete(*, scope: str, token: uuid.UUID, response: HttpResponse, headers: dict[str, str]) -> None:
    """Store the response; must run inside the view's transaction. Raises LostOwnership if reclaimed."""
    body = bytes(response.content)
    encrypted = settings.IDEMPOTENCY_ENCRYPT_RESPONSES
    stored = encrypt_text(body.decode("latin-1")).encode() if encrypted else body
    updated = IdempotencyRecord.objects.filter(
        scope_hash=scope, attempt_token=token, state=IdempotencyRecord.State.IN_FLIGHT
    ).update(
        state=IdempotencyRecord.State.COMPLETED, completed_at=timezone.now(), response_status=response.status_code,
        response_headers=headers, response_body=stored, body_encrypted=encrypted,
    )
    if not updated:
        raise LostOwnership(scope)


def record_release(*, scope: str, token: uuid.UUID) -> None:
    """Forget a claim whose response is not stored, so the key can be used again."""
    IdempotencyRecord.objects.filter(scope_hash=scope, attempt_token=token).delete()


def record_body(record: IdempotencyRecord) -> bytes:
    """The stored response body, decrypted if needed."""
    body = bytes(record.response_body)
    return decrypt_text(body.decode()).encode("latin-1") if record.body_encrypted else body


def records_purge(*, batch_size: int = 5000, max_batches: int = 100) -> int:
    """Delete expired records in batches; returns how many."""
    expired = IdempotencyRecord.objects.filter(expires_at__lte=timezone.now())
    return delete_in_batches(expired, batch_size=batch_size, max_batches=max_batches)


def _claim_sql() -> str:
    """One autocommitted INSERT … ON CONFLICT: a single round trip.

    On PostgreSQL the claim commits without waiting for its WAL flush (synchronous_commit off for
    this statement's transaction). That is safe: if the server crashed before the flush the claim is
    simply gone and a retry runs fresh, and the view's durable commit later flushes the WAL before
    it, so a completed request can never lose its claim.
    """
    durability = ""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        durability = " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
    return (
        f"INSERT INTO {TABLE} (scope_hash, user_id, key, method, path, fingerprint, state, attempt_token, "
        "locked_at, created_at, expires_at, response_headers, response_body, body_encrypted) "
        f"SELECT %s, %s, %s, %s, %s, %s, 'in_flight', %s, %s, %s, %s, '{{}}', %s, false{durability} "
        "ON CONFLICT (scope_hash) DO NOTHING RETURNING id"
    )
