"""Claiming, completing and releasing idempotency records: PostgreSQL is the source of truth.

A claim commits on its own (so concurrent retries see it at once); the completion commits in the
same transaction as the view's writes, and only if this execution still owns the record. Every
change is a compare-and-set decided by the database on its own clock: the web servers' clocks
never decide whether a lease or a record has expired.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models.functions import Now
from django.http import HttpResponse

from apps.core.crypto import decrypt_text, encrypt_text
from apps.core.db import uuid_param
from apps.core.purging import delete_in_batches
from apps.idempotency.models import IdempotencyRecord

TABLE = IdempotencyRecord._meta.db_table
IN_FLIGHT = IdempotencyRecord.State.IN_FLIGHT


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
    """Claim the key for a new execution, or say why not (completed, running elsewhere, other request).

    One statement inserts the record or takes over an existing one that has expired, or whose
    execution's lease has run out (same request only); the database decides both on its clock,
    holding the row, so a take-over can never overwrite a completion that committed meanwhile.
    """
    token = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(), [
            scope, user_id, key, method, path, fingerprint, uuid_param(token),
            _interval(settings.IDEMPOTENCY_RETENTION_SECONDS), b"", _interval(-settings.IDEMPOTENCY_LEASE_SECONDS),
        ])
        claimed = cursor.fetchone()
    if claimed:
        return Claim("owned", token=token, reclaimed=bool(claimed[0]))
    record = IdempotencyRecord.objects.filter(scope_hash=scope).first()
    if record is None:  # released or purged between our statement and this read: try once more
        return record_claim(scope=scope, user_id=user_id, key=key, method=method, path=path, fingerprint=fingerprint)
    if record.fingerprint != fingerprint:
        return Claim("mismatch", record=record)
    if record.state == IdempotencyRecord.State.COMPLETED:
        return Claim("replay", record=record)
    return Claim("in_flight", record=record)


# Set on a response (response_keep_encrypted) whose body must never be stored in plaintext, e.g. a secret.
KEEP_ENCRYPTED = "idempotency_keep_encrypted"


def response_keep_encrypted(response: HttpResponse) -> HttpResponse:
    """Mark ``response`` so that its idempotency record keeps it encrypted whatever IDEMPOTENCY_ENCRYPT_RESPONSES
    says (FERNET_KEYS must be set); returns it."""
    setattr(response, KEEP_ENCRYPTED, True)
    return response


def record_complete(*, scope: str, token: uuid.UUID, response: HttpResponse, headers: dict[str, str]) -> None:
    """Store the response (in the view's transaction, or after it rolled back); raises LostOwnership if reclaimed."""
    body = bytes(response.content)
    encrypted = settings.IDEMPOTENCY_ENCRYPT_RESPONSES or getattr(response, KEEP_ENCRYPTED, False)
    stored = encrypt_text(body.decode("latin-1")).encode() if encrypted else body
    updated = IdempotencyRecord.objects.filter(scope_hash=scope, attempt_token=token, state=IN_FLIGHT).update(
        state=IdempotencyRecord.State.COMPLETED, completed_at=Now(), response_status=response.status_code,
        response_headers=headers, response_body=stored, body_encrypted=encrypted,
    )
    if not updated:
        raise LostOwnership(scope)


def record_release(*, scope: str, token: uuid.UUID) -> None:
    """Forget a claim whose response is not kept, so the key can be used again (only while it is ours)."""
    IdempotencyRecord.objects.filter(scope_hash=scope, attempt_token=token, state=IN_FLIGHT).delete()


def record_body(record: IdempotencyRecord) -> bytes:
    """The stored response body, decrypted if needed."""
    body = bytes(record.response_body)
    return decrypt_text(body.decode()).encode("latin-1") if record.body_encrypted else body


def records_purge(*, batch_size: int = 5000, max_batches: int = 100) -> int:
    """Delete expired records in batches; returns how many."""
    expired = IdempotencyRecord.objects.filter(expires_at__lte=Now())
    return delete_in_batches(expired, batch_size=batch_size, max_batches=max_batches)


def _claim_sql() -> str:
    """One autocommitted INSERT … ON CONFLICT DO UPDATE … WHERE: a single round trip.

    The WHERE is the take-over's compare-and-set. PostgreSQL evaluates it on the newest version of
    the row while holding its lock, so if the owner completed meanwhile the row stays as it is and
    nothing is returned. RETURNING says whether this was a take-over of a running request's lease
    (created_at is kept then, while a new or expired record starts afresh).

    On PostgreSQL the claim commits without waiting for its WAL flush (synchronous_commit off for
    this statement's transaction). That is safe: if the server crashed before the flush the claim is
    simply gone and a retry runs fresh, and the view's durable commit later flushes the WAL before
    it, so a completed request can never lose its claim.
    """
    vendor = connection.vendor
    now, shifted = _TIME_SQL[vendor]
    durability = ""
    if vendor == "postgresql" and not connection.in_atomic_block:
        durability = " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
    return (
        f"INSERT INTO {TABLE} AS r (scope_hash, user_id, key, method, path, fingerprint, state, attempt_token, "
        "locked_at, created_at, expires_at, response_headers, response_body, body_encrypted) "
        f"SELECT %s, %s, %s, %s, %s, %s, 'in_flight', %s, {now}, {now}, {shifted.format(now)}, '{{}}', %s, false"
        f"{durability} WHERE true "
        "ON CONFLICT (scope_hash) DO UPDATE SET state = 'in_flight', attempt_token = excluded.attempt_token, "
        "locked_at = excluded.locked_at, expires_at = excluded.expires_at, fingerprint = excluded.fingerprint, "
        "created_at = CASE WHEN r.expires_at <= excluded.locked_at THEN excluded.created_at ELSE r.created_at END, "
        "completed_at = NULL, response_status = NULL, response_headers = '{}', response_body = excluded.response_body, "
        "body_encrypted = false "
        "WHERE r.expires_at <= excluded.locked_at OR (r.state = 'in_flight' AND r.fingerprint = excluded.fingerprint "
        f"AND r.locked_at <= {shifted.format('excluded.locked_at')}) "
        "RETURNING created_at <> locked_at"
    )


# The database's clock, and a time shifted by an _interval() parameter, per vendor. SQLite keeps
# Django's datetimes as UTC text that sorts like time, which strftime writes in the same form.
_TIME_SQL = {
    "postgresql": ("statement_timestamp()", "({} + make_interval(secs => %s))"),
    "sqlite": ("strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now')", "strftime('%%Y-%%m-%%d %%H:%%M:%%f', {}, %s)"),
}


def _interval(seconds: int) -> int | str:
    """A shift of ``seconds`` as the vendor's _TIME_SQL expects it."""
    return f"{seconds:+d} seconds" if connection.vendor == "sqlite" else seconds
