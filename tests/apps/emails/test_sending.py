"""Emails sent by a real `celery worker` (relay included) through a real SMTP server on loopback."""

from __future__ import annotations

import json

import pytest
import redis
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import transaction

import apps.orders.emails  # noqa: F401 - registers the order email subscribers (see test_orders below)
from apps.core.models import OperatorAction
from apps.core.task_contract import EMAILS_SEND
from apps.emails.models import Email
from apps.emails.services import notify_email
from apps.orders.emails import ORDER_CANCELLED, ORDER_CONFIRMED
from apps.orders.models import Order
from apps.outbox import publish
from apps.outbox.models import InboxEntry, OutboxMessage
from tests.apps.emails.smtp_server import SmtpServer
from tests.helpers import wait_until
from tests.processes import celery_process
from workers import app

pytestmark = pytest.mark.django_db(transaction=True)
KEY = Fernet.generate_key().decode()
MAX_ATTEMPTS = 3
CONTEXT = {"order_id": 7, "sku": "tea", "quantity": 2, "username": "ana"}


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory):
    """One SMTP server and one worker (consuming every queue, so it relays too) for the whole module."""
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).flushdb()
    server = SmtpServer().start()
    log = tmp_path_factory.mktemp("emails") / "worker.log"
    try:
        with celery_process("worker", log, "--concurrency", "2", "--include", "apps.orders.emails",
                            EMAIL_URL=server.url, EMAIL_MAX_ATTEMPTS=str(MAX_ATTEMPTS), FERNET_KEYS=KEY,
                            OUTBOX_BACKOFF_BASE_MS="50", OUTBOX_BACKOFF_MAX_SECONDS="1"):
            yield server, log
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _same_keys(settings):
    settings.FERNET_KEYS = [KEY]  # the worker decrypts what this process encrypts
    settings.EMAIL_MAX_ATTEMPTS = MAX_ATTEMPTS


def _ask(to: str, key: str) -> Email:
    with transaction.atomic():
        return notify_email(to, "order_confirmed", CONTEXT, key=key)


def _state(email: Email, *states: str) -> bool:
    email.refresh_from_db()
    return email.state in states


def _outcomes(log, email_id: int) -> list[str]:
    found = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        message = json.loads(line).get("message", "")
        if f"Task {EMAILS_SEND}[" in message and " succeeded " in message:
            found.append(message)
    return found


def test_sent_once_per_key_even_when_the_task_is_delivered_twice(stack):
    server, log = stack
    first = _ask("once@example.com", "once")
    again = _ask("once@example.com", "once")
    assert again.pk == first.pk
    assert OutboxMessage.objects.filter(name=EMAILS_SEND).count() == 1
    assert json.loads(Fernet(KEY).decrypt(first.context.encode())) == CONTEXT  # encrypted at rest
    before = len(_outcomes(log, first.pk))
    for _ in range(2):  # the broker delivering the same send again, while or after it runs
        app.send_task(EMAILS_SEND, args=[first.pk])
    wait_until(lambda: _state(first, "sent"), timeout=60, message="the email to be sent")
    wait_until(lambda: len(_outcomes(log, first.pk)) >= before + 3, timeout=60, message="all three runs to end")
    messages = server.handler.messages_to("once@example.com")
    assert len(messages) == 1
    assert messages[0]["Subject"] == "Your order #7 is confirmed"
    assert "2 x tea" in messages[0].get_body(("plain",)).get_content()
    assert "2 &times; tea" in messages[0].get_body(("html",)).get_content()
    assert first.attempts == 1 and first.sent_at is not None
    assert messages[0]["Message-ID"].startswith(f"<taskplane.{first.pk}.")  # the same on any re-send


def test_transient_failures_retry_through_the_outbox_then_succeed(stack):
    server, _ = stack
    email = _ask("flaky2@example.com", "flaky")
    wait_until(lambda: _state(email, "sent", "failed"), timeout=60, message="the email to be sent")
    assert email.state == "sent"
    assert email.attempts == 3
    assert server.handler.refused["flaky2@example.com"] == 2
    retried = server.handler.messages_to("flaky2@example.com")
    assert len(retried) == 1
    assert retried[0]["Message-ID"].startswith(f"<taskplane.{email.pk}.")
    # each retry was a delayed outbox row, not a broker countdown
    assert OutboxMessage.objects.filter(name=EMAILS_SEND, dedup_key__startswith=f"emails.send:{email.pk}:after:"
                                        ).count() == 2


def test_permanent_failure_is_failed_after_max_attempts_and_retried_from_admin(stack, admin_client):
    server, _ = stack
    down = _ask("down@example.com", "down")
    rejected = _ask("reject@example.com", "reject")
    wait_until(lambda: _state(down, "failed") and _state(rejected, "failed"), timeout=60,
               message="both emails to fail")
    assert down.attempts == MAX_ATTEMPTS and "451" in down.last_error
    assert rejected.attempts == 1 and "550" in rejected.last_error  # a 5xx is not retried
    page = admin_client.get("/admin/emails/email/?state__exact=failed").content.decode()
    assert "down@example.com" in page and "reject@example.com" in page
    response = admin_client.post("/admin/emails/email/", {"action": "retry_failed",
                                                          "_selected_action": [down.pk]}, follow=True)
    assert "Re-queued 1 of 1" in response.content.decode()
    assert OperatorAction.objects.filter(action="emails.retry_failed", target_id=str(down.pk)).exists()
    wait_until(lambda: server.handler.refused["down@example.com"] >= 2 * MAX_ATTEMPTS and _state(down, "failed"),
               timeout=60, message="the retried email to fail again")
    assert down.attempts == MAX_ATTEMPTS


def test_rolled_back_caller_sends_nothing(stack):
    server, _ = stack
    with pytest.raises(RuntimeError), transaction.atomic():
        notify_email("rollback@example.com", "order_confirmed", CONTEXT, key="rolled-back")
        raise RuntimeError("the caller fails after asking")
    assert not Email.objects.filter(key="rolled-back").exists()
    assert not OutboxMessage.objects.filter(name=EMAILS_SEND).exists()
    later = _ask("later@example.com", "later")
    wait_until(lambda: _state(later, "sent"), timeout=60, message="the later email to be sent")
    assert server.handler.messages_to("rollback@example.com") == []


def test_order_confirmed_and_cancelled_email_the_owner(stack):
    server, _ = stack
    users = get_user_model().objects
    owner = users.create_user(username="olga", email="olga@example.com", password="x")
    silent = users.create_user(username="sam", email="", password="x")
    confirmed = Order.objects.create(owner=owner, sku="tea", quantity=3)
    cancelled = Order.objects.create(owner=owner, sku="cup", quantity=1)
    unaddressed = Order.objects.create(owner=silent, sku="pot", quantity=1)
    with transaction.atomic():
        publish(ORDER_CONFIRMED, {"order_id": confirmed.pk}, key=f"order:{confirmed.pk}")
        publish(ORDER_CANCELLED, {"order_id": cancelled.pk}, key=f"order:{cancelled.pk}")
        publish(ORDER_CONFIRMED, {"order_id": unaddressed.pk}, key=f"order:{unaddressed.pk}")
    wait_until(lambda: len(server.handler.messages_to("olga@example.com")) == 2, timeout=60,
               message="both order emails")
    subjects = sorted(message["Subject"] for message in server.handler.messages_to("olga@example.com"))
    assert subjects == sorted([f"Your order #{cancelled.pk} is cancelled", f"Your order #{confirmed.pk} is confirmed"])
    wait_until(lambda: InboxEntry.objects.filter(consumer="orders.email_confirmed").count() == 2, timeout=60,
               message="the unaddressed order's event to be handled")
    assert set(Email.objects.values_list("key", flat=True)) == {
        f"{ORDER_CONFIRMED}:{confirmed.pk}", f"{ORDER_CANCELLED}:{cancelled.pk}"}
