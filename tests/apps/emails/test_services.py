"""notify_email's input checks and storage, the send claim's take-over rules, and the retention purge."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from apps.core.errors import InvalidInput
from apps.core.task_contract import EMAILS_SEND
from apps.emails.models import Email
from apps.emails.sending import email_send
from apps.emails.services import emails_purge, notify_email
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db
CONTEXT = {"order_id": 1, "sku": "tea", "quantity": 1, "username": "ana"}


@pytest.fixture(autouse=True)
def _memory_backend(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # SMTP is covered in test_sending
    settings.FERNET_KEYS = []


@pytest.mark.parametrize(("to", "template", "context", "message"), [
    ("not an address", "order_confirmed", CONTEXT, "not an email address"),
    ("a@example.com", "no_such_template", CONTEXT, "does not exist"),
    ("a@example.com", "../order_confirmed", CONTEXT, "not valid"),
    ("a@example.com", "order_confirmed", {"when": timezone.now()}, "not JSON-serialisable"),
])
def test_bad_input_is_refused_and_writes_nothing(to, template, context, message):
    with pytest.raises(InvalidInput, match=message), transaction.atomic():
        notify_email(to, template, context, key="k")
    assert not Email.objects.exists() and not OutboxMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_is_refused():
    with pytest.raises(InvalidInput, match=r"inside transaction\.atomic"):
        notify_email("a@example.com", "order_confirmed", CONTEXT, key="k")


def test_without_fernet_keys_the_context_is_stored_as_json():
    with transaction.atomic():
        email = notify_email("a@example.com", "order_confirmed", CONTEXT, key="k")
    assert not email.encrypted and json.loads(email.context) == CONTEXT


def _claimed_elsewhere(*, lease: timedelta) -> Email:
    with transaction.atomic():
        email = notify_email("a@example.com", "order_confirmed", CONTEXT, key="k")
    Email.objects.filter(pk=email.pk).update(state=Email.State.SENDING, lease_until=timezone.now() + lease,
                                             attempts=1)
    return email


def test_a_live_claim_is_left_alone_and_looked_at_again_after_its_lease():
    email = _claimed_elsewhere(lease=timedelta(minutes=5))
    assert email_send(email_id=email.pk) == "busy"
    assert email_send(email_id=email.pk) == "busy"
    assert mail.outbox == []
    rechecks = OutboxMessage.objects.filter(name=EMAILS_SEND,
                                            dedup_key__startswith=f"{EMAILS_SEND}:recheck:{email.pk}:")
    assert rechecks.count() == 1  # one look-again per claim, however often the task is redelivered


def test_an_expired_claim_is_taken_over_and_sent():
    email = _claimed_elsewhere(lease=timedelta(seconds=-1))
    assert email_send(email_id=email.pk) == "sent"
    assert email_send(email_id=email.pk) == "already-sent"
    assert len(mail.outbox) == 1
    email.refresh_from_db()
    assert email.attempts == 2 and email.state == Email.State.SENT


def test_purge_deletes_sent_and_failed_emails_past_their_retention(settings):
    settings.EMAILS_RETENTION_DAYS = 30
    settings.EMAILS_FAILED_RETENTION_DAYS = 90
    now = timezone.now()
    for key, state, age_days, sent_days in [("old-sent", "sent", 31, 31), ("new-sent", "sent", 1, 1),
                                            ("old-failed", "failed", 91, None), ("new-failed", "failed", 89, None),
                                            ("old-queued", "queued", 400, None)]:
        email = Email.objects.create(key=key, to="a@example.com", template="order_confirmed", state=state,
                                     sent_at=None if sent_days is None else now - timedelta(days=sent_days))
        Email.objects.filter(pk=email.pk).update(created_at=now - timedelta(days=age_days))  # auto_now_add
    assert emails_purge() == 2
    assert set(Email.objects.values_list("key", flat=True)) == {"new-sent", "new-failed", "old-queued"}
