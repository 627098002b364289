"""Encrypted stays encrypted (issue 15 §9): a subscriber of an encrypted topic that keeps failing leaves
retry rows and a dead letter that are encrypted too, with no plaintext of the payload anywhere in the
outbox table. Before, they copied the decrypted event into rows with encrypted=False."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from django.db import transaction

from apps.core.crypto import decrypt_text
from apps.core.task_contract import OUTBOX_DELIVER_EVENT
from apps.outbox import publish
from apps.outbox.models import OutboxMessage
from apps.outbox.serving import relay_drain
from tests.helpers import wait_until
from tests.processes import NO_RELAY, celery_process
from tests.workers.policy_tasks import SECRET_SUBSCRIBER, SECRET_TOPIC

pytestmark = pytest.mark.django_db(transaction=True)

CARD = "4111-SECRET-CARD-0042"


def test_retries_and_dead_letters_of_an_encrypted_event_are_encrypted(settings, tmp_path, broker_redis):
    key = Fernet.generate_key().decode()
    settings.FERNET_KEYS = [key]
    settings.OUTBOX_ENCRYPTED_TOPICS = [SECRET_TOPIC]
    worker_env = {"FERNET_KEYS": key, "OUTBOX_ENCRYPTED_TOPICS": SECRET_TOPIC, "OUTBOX_SUBSCRIBER_MAX_ATTEMPTS": "3",
                  "OUTBOX_BACKOFF_BASE_MS": "20"}
    with celery_process("worker", tmp_path / "worker.log", "--concurrency", "1", *NO_RELAY, "--include",
                        "tests.workers.policy_tasks", **worker_env):
        with transaction.atomic():
            event = publish(SECRET_TOPIC, {"card": CARD}, key="customer:1")

        def dead_letter():
            relay_drain()
            return OutboxMessage.objects.filter(name=OUTBOX_DELIVER_EVENT, status="dead").first()

        dead = wait_until(dead_letter, timeout=60, message="the delivery to be dead-lettered")

    deliveries = list(OutboxMessage.objects.filter(name=OUTBOX_DELIVER_EVENT).order_by("id"))
    assert [row.status for row in deliveries] == ["published", "published", "dead"]  # two retries, one dead
    assert all(row.encrypted for row in OutboxMessage.objects.all())
    for row in OutboxMessage.objects.all():
        stored = json.dumps([row.payload, row.headers, row.context, row.last_error, row.key, row.dedup_key])
        assert CARD not in stored, f"plaintext of the payload in row {row.pk} ({row.name}, {row.status})"
    assert dead.last_error.startswith("ValueError (message withheld")
    # Still retryable: the dead letter holds the whole delivery, readable with the key.
    subscriber, envelope = json.loads(decrypt_text(dead.payload))["args"]
    assert (subscriber, envelope["id"], envelope["payload"]) == (SECRET_SUBSCRIBER, str(event.message_id),
                                                                 {"card": CARD})
