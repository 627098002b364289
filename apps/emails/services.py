"""Write services of the emails app: ask for an email, retry failed ones, purge expired ones."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.audit import Actor, operator_action_record
from apps.core.crypto import encrypt_text
from apps.core.errors import InvalidInput
from apps.core.purging import delete_in_batches
from apps.core.task_contract import EMAILS_SEND
from apps.emails.models import Email
from apps.emails.rendering import template_check
from apps.outbox import enqueue


def notify_email(to: str, template: str, context: dict[str, Any], *, key: str) -> Email:
    """Record an email to ``to`` in the caller's transaction and enqueue its send; the same ``key`` sends once.

    A second call with a key already used returns the existing row and enqueues nothing (even if
    its arguments differ). The context is encrypted at rest when FERNET_KEYS is set.
    """
    if not isinstance(key, str) or not 0 < len(key) <= 200:
        raise InvalidInput("The email key must be a string of 1 to 200 characters.")
    try:
        validate_email(to)
    except ValidationError as exc:
        raise InvalidInput(f"{to!r} is not an email address.") from exc
    template_check(template=template)
    try:
        text = json.dumps(context, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"The email context is not JSON-serialisable: {exc}") from exc
    if not connection.in_atomic_block:
        raise InvalidInput("notify_email() must run inside transaction.atomic(): the email commits with your writes.")
    encrypted = bool(settings.FERNET_KEYS)
    with transaction.atomic():  # joins the caller's; the inner savepoint keeps a duplicate key from breaking it
        existing = Email.objects.filter(key=key).first()
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                email = Email.objects.create(key=key, to=to, template=template, encrypted=encrypted,
                                             context=encrypt_text(text) if encrypted else text)
        except IntegrityError:  # a concurrent caller committed the same key first
            return Email.objects.get(key=key)
        enqueue(EMAILS_SEND, args=[email.pk], key=f"email:{email.pk}", dedup_key=f"emails.send:{email.pk}:1")
    return email


def email_retry_failed(*, email_ids: Iterable[int], actor: Actor) -> int:
    """Queue failed emails for a fresh round of attempts (audited); returns how many were re-queued."""
    with transaction.atomic():
        ids = list(Email.objects.select_for_update().filter(pk__in=list(email_ids), state=Email.State.FAILED)
                   .values_list("pk", flat=True))
        if not ids:
            return 0
        Email.objects.filter(pk__in=ids, state=Email.State.FAILED).update(
            state=Email.State.QUEUED, attempts=0, claim_token=None, lease_until=None)
        stamp = timezone.now().timestamp()
        for email_id in ids:
            # A new dedup key per retry: the earlier send rows of this email keep theirs.
            enqueue(EMAILS_SEND, args=[email_id], key=f"email:{email_id}", dedup_key=f"emails.retry:{email_id}:{stamp}")
        operator_action_record(actor=actor, action="emails.retry_failed", target_type="emails.email", target_ids=ids)
    return len(ids)


def emails_purge() -> int:
    """Delete sent and failed emails past their retention (EMAILS_*RETENTION_DAYS); returns how many."""
    now = timezone.now()
    sent_cutoff = now - timedelta(days=settings.EMAILS_RETENTION_DAYS)
    failed_cutoff = now - timedelta(days=settings.EMAILS_FAILED_RETENTION_DAYS)
    expired = (Q(state=Email.State.SENT, sent_at__lt=sent_cutoff)
               | Q(state=Email.State.FAILED, created_at__lt=failed_cutoff))
    return delete_in_batches(Email.objects.filter(expired))
