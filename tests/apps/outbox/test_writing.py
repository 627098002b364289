"""publish() and enqueue(): written in the caller's transaction, validated, with context headers."""

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from apps.core.request_context import set_request_id
from apps.outbox import enqueue, publish
from apps.outbox.errors import OutboxError
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_publish_commits_with_the_transaction():
    with transaction.atomic():
        message = publish("order.placed", {"order_id": 1}, key="order:1")

    stored = OutboxMessage.objects.get(pk=message.pk)
    assert (stored.kind, stored.name, stored.key, stored.status) == ("event", "order.placed", "order:1", "pending")
    assert stored.payload == '{"order_id":1}'
    assert stored.headers["message_id"] == str(stored.message_id)


def test_rolled_back_transaction_leaves_no_message():
    with pytest.raises(RuntimeError), transaction.atomic():
        publish("order.placed", {"order_id": 1})
        raise RuntimeError("business failure")

    assert not OutboxMessage.objects.exists()


def test_publish_outside_a_transaction_is_refused():
    with pytest.raises(OutboxError, match=r"transaction\.atomic"):
        publish("order.placed", {})
    assert not OutboxMessage.objects.exists()


@override_settings(OUTBOX_ALLOW_AUTOCOMMIT=True)
def test_autocommit_writes_can_be_allowed_explicitly():
    publish("order.placed", {})
    assert OutboxMessage.objects.count() == 1


@pytest.mark.parametrize(
    "payload", [{"when": timezone.now()}, {"x": float("nan")}, {1j}, object()], ids=["datetime", "nan", "set", "object"]
)
def test_non_json_payloads_are_refused(payload):
    with pytest.raises(OutboxError, match="not JSON-serialisable"), transaction.atomic():
        publish("t", payload)
    assert not OutboxMessage.objects.exists()


@override_settings(OUTBOX_MAX_PAYLOAD_BYTES=100)
def test_oversized_payload_is_refused():
    with pytest.raises(OutboxError, match="limit is 100"), transaction.atomic():
        publish("t", {"blob": "x" * 200})


@pytest.mark.parametrize("key", ["", "k" * 201, 5])
def test_bad_keys_are_refused(key):
    with pytest.raises(OutboxError, match="key"), transaction.atomic():
        publish("t", {}, key=key)


def test_enqueue_records_a_task_with_its_queue_and_delay():
    before = timezone.now()
    with transaction.atomic():
        message = enqueue("core.heartbeat", args=["x"], delay=timedelta(seconds=30))

    stored = OutboxMessage.objects.get(pk=message.pk)
    assert (stored.kind, stored.name, stored.queue) == ("task", "core.heartbeat", "default")
    assert stored.payload == '{"args":["x"],"kwargs":{}}'
    assert stored.available_at >= before + timedelta(seconds=30)


def test_enqueue_of_an_unknown_task_is_refused():
    with pytest.raises(OutboxError, match="Unknown task"), transaction.atomic():
        enqueue("nobody.knows")


def test_headers_carry_request_id_and_caller_headers():
    set_request_id("req-7")
    try:
        with transaction.atomic():
            message = publish("t", {}, headers={"tenant": "acme"})
    finally:
        set_request_id(None)

    assert message.headers["request_id"] == "req-7"
    assert message.headers["tenant"] == "acme"
    uuid.UUID(message.headers["message_id"])


def test_one_notify_per_transaction_and_none_after_rollback(django_db_blocker):
    import psycopg
    from django.db import connection

    listener = psycopg.connect(**_params(connection), autocommit=True)
    listener.execute("LISTEN taskplane_outbox")
    with transaction.atomic():
        for index in range(5):
            publish("t", {"n": index})
    with pytest.raises(RuntimeError), transaction.atomic():
        publish("t", {})
        raise RuntimeError
    with transaction.atomic():
        publish("t", {})

    received = list(listener.notifies(timeout=1.0))
    listener.close()
    assert len(received) == 2


def _params(connection):
    connection.ensure_connection()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params
