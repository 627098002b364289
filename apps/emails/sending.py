"""The send task's handler: claim the row, render, send after commit, record the outcome.

A send claims its row with a conditional UPDATE (queued → sending, or a sending row whose lease has
expired on the database clock) and records the outcome only while its claim token still matches,
so a redelivered task never sends a claimed or sent email again. A transient SMTP error re-queues
the row with a new send task written through the outbox, the outbox backoff away; after
EMAIL_MAX_ATTEMPTS, or at once on a permanent (5xx) refusal, the row is failed.

The at-least-once window: when the process dies after the server accepted the message but before
the row says sent, the lease expires and the email is sent again (docs/emails.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import smtplib
import uuid
from datetime import timedelta
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.template import TemplateDoesNotExist, TemplateSyntaxError

from apps.core.crypto import decrypt_text
from apps.core.task_contract import EMAILS_SEND
from apps.emails.models import Email
from apps.emails.rendering import email_render
from apps.outbox import enqueue, enqueue_claim_recheck
from apps.outbox.relay import backoff_seconds

logger = logging.getLogger(__name__)


class PermanentSendError(Exception):
    """The server refused the message for good (5xx), or it cannot be rendered: retrying cannot help."""


def lease_seconds() -> float:
    """How long a claim holds: past the task's hard time limit, so a live send never loses its claim."""
    return settings.CELERY_TASK_TIME_LIMIT + 30


def email_send(*, email_id: int) -> str:
    """Send email ``email_id`` once; returns the outcome (sent, retry, failed, busy, already-sent…)."""
    token = uuid.uuid4()
    claimed = Email.objects.filter(pk=email_id).filter(
        Q(state=Email.State.QUEUED) | Q(state=Email.State.SENDING, lease_until__lt=Now())
    ).update(state=Email.State.SENDING, claim_token=token, attempts=F("attempts") + 1,
             lease_until=Now() + timedelta(seconds=lease_seconds()))
    if claimed != 1:
        return _not_claimed(email_id)
    email = Email.objects.get(pk=email_id)
    try:
        _deliver(email)
    except PermanentSendError as exc:
        return _record_failure(email, token, error=str(exc), permanent=True)
    except Exception as exc:  # any other backend error is this attempt's failure, retried
        return _record_failure(email, token, error=f"{type(exc).__name__}: {exc}", permanent=False)
    updated = Email.objects.filter(pk=email.pk, state=Email.State.SENDING, claim_token=token).update(
        state=Email.State.SENT, sent_at=Now(), last_error="", lease_until=None)
    if updated != 1:  # only if this claim outlived its lease; the server has the message all the same
        logger.warning("Email %s was sent but its claim had been taken over; it may be sent twice", email.pk)
    return "sent"


def _not_claimed(email_id: int) -> str:
    email = Email.objects.filter(pk=email_id).first()
    if email is None:
        return "missing"
    if email.state != Email.State.SENDING:
        return f"already-{email.state}"
    # Another send holds a live claim (a redelivered task while the first still runs, or one whose worker
    # died): look again once the lease can have expired, so a dead claim is taken over and not lost.
    enqueue_claim_recheck(EMAILS_SEND, object_id=email_id, claim_token=email.claim_token,
                          after_seconds=lease_seconds() + 1)
    return "busy"


def _deliver(email: Email) -> None:
    context = json.loads(decrypt_text(email.context) if email.encrypted else email.context)
    try:
        rendered = email_render(template=email.template, context=context)
    except (TemplateDoesNotExist, TemplateSyntaxError) as exc:
        raise PermanentSendError(f"{type(exc).__name__}: {exc}") from exc
    message = EmailMultiAlternatives(subject=rendered.subject, body=rendered.text, to=[email.to],
                                     from_email=settings.DEFAULT_FROM_EMAIL, headers={"Message-ID": _message_id(email)})
    message.attach_alternative(rendered.html, "text/html")
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(code >= 500 for code in codes):
            raise PermanentSendError(f"SMTPRecipientsRefused: {exc.recipients}") from exc
        raise
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise PermanentSendError(f"{type(exc).__name__}: {exc.smtp_code} {exc.smtp_error!r}") from exc
        raise


def _message_id(email: Email) -> str:
    """A Message-ID stable across re-sends of one email, so a receiver that deduplicates by it can."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "taskplane.invalid"
    return f"<taskplane.{email.pk}.{hashlib.sha256(email.key.encode()).hexdigest()[:16]}@{domain}>"


def _record_failure(email: Email, token: uuid.UUID, *, error: str, permanent: bool) -> str:
    last = permanent or email.attempts >= settings.EMAIL_MAX_ATTEMPTS
    mine = Email.objects.filter(pk=email.pk, state=Email.State.SENDING, claim_token=token)
    with transaction.atomic():
        if last:
            if mine.update(state=Email.State.FAILED, last_error=error[:2000], lease_until=None) != 1:
                return _claim_lost(email)
            logger.error("Email %s failed after %d attempt(s): %s", email.pk, email.attempts, error)
            return "failed"
        if mine.update(state=Email.State.QUEUED, last_error=error[:2000], lease_until=None) != 1:
            return _claim_lost(email)
        enqueue(EMAILS_SEND, args=[email.pk], delay=backoff_seconds(email.attempts),
                dedup_key=f"emails.send:{email.pk}:after:{token}")
    logger.warning("Email %s attempt %d of %d failed; retrying: %s", email.pk, email.attempts,
                   settings.EMAIL_MAX_ATTEMPTS, error)
    return "retry"


def _claim_lost(email: Email) -> str:
    # Only a send that outlived its lease gets here; the send that took the claim over records the outcome.
    logger.warning("Email %s: this send's claim was taken over; its outcome is left to the newer send", email.pk)
    return "claim-lost"
