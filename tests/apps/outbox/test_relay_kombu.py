"""KombuTransport against real RabbitMQ (publisher confirms) and the filesystem transport of the embedded default."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from django.db import transaction
from kombu import Connection, Exchange, Queue

from apps.outbox import publish
from apps.outbox.models import OutboxMessage
from apps.outbox.relay import relay_once
from apps.outbox.transports import KombuTransport

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def events_exchange(settings):
    """A topic exchange of this test's own on the workstream's RabbitMQ vhost, deleted afterwards."""
    settings.OUTBOX_EVENTS_EXCHANGE = f"test-relay-{uuid.uuid4().hex[:10]}"
    yield Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic", durable=True)
    with Connection(settings.RABBITMQ_URL, connect_timeout=5) as conn:
        conn.default_channel.exchange_delete(settings.OUTBOX_EVENTS_EXCHANGE)


@pytest.fixture
def rabbitmq(events_exchange):
    transport = KombuTransport(settings.RABBITMQ_URL, {})
    conn = Connection(settings.RABBITMQ_URL, connect_timeout=5)
    declared = []

    def bind(routing_key: str, **arguments) -> Queue:
        queue = Queue(f"test-relay-{uuid.uuid4().hex[:10]}", events_exchange, routing_key=routing_key,
                      durable=False, queue_arguments=arguments or None)(conn.default_channel)
        queue.declare()
        declared.append(queue)
        return queue

    yield transport, bind
    for queue in declared:
        queue.delete()
    conn.release()
    transport.close()


def _event(topic: str, key: str | None = None) -> OutboxMessage:
    with transaction.atomic():
        return publish(topic, {"topic": topic}, key=key)


def _received(queue: Queue) -> list[str]:
    ids = []
    while (message := queue.get(no_ack=True)) is not None:
        ids.append(message.decode()["id"])
    return ids


def test_a_refused_message_skips_only_later_messages_of_its_key(rabbitmq):
    """issue 15 §6: RabbitMQ nacks one publish; only that key's later messages wait, the batch goes on.

    The refusal is real: a queue with x-max-length 0 and x-overflow reject-publish makes RabbitMQ answer the
    publish with basic.nack under publisher confirms.
    """
    transport, bind = rabbitmq
    bind("refused.#", **{"x-max-length": 0, "x-overflow": "reject-publish"})
    observer = bind("ok.#")
    refused = _event("refused.x", key="a")
    same_key = _event("ok.a", key="a")
    other_key = _event("ok.b", key="b")
    unkeyed = _event("ok.c")

    result = relay_once(transport)

    rows = {row.pk: row for row in OutboxMessage.objects.all()}
    assert (rows[refused.pk].status, rows[refused.pk].attempts) == ("pending", 1)
    assert "MessageNacked" in rows[refused.pk].last_error
    assert (rows[same_key.pk].status, rows[same_key.pk].attempts) == ("pending", 0)
    assert rows[other_key.pk].status == rows[unkeyed.pk].status == "published"
    assert _received(observer) == [str(other_key.message_id), str(unkeyed.message_id)]
    assert (result.published, result.failed, result.skipped) == (2, 1, 1)


def test_events_no_queue_is_bound_for_are_counted_on_rabbitmq(rabbitmq):
    """issue 15 §8: RabbitMQ drops an event nobody bound a queue for; the relay counts it (mandatory + return)."""
    transport, bind = rabbitmq
    observer = bind("seen.#")
    seen = _event("seen.x")
    _event("unseen.x")

    result = relay_once(transport)

    assert result.published == 2
    assert result.unroutable == {"unseen.x": 1}
    assert _received(observer) == [str(seen.message_id)]


def test_events_no_queue_is_bound_for_are_counted_on_the_filesystem_transport(tmp_path, settings):
    """issue 15 §8: the embedded default's transport drops unroutable messages silently; the relay counts them."""
    folders = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "control_folder": str(tmp_path)}
    exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic", durable=True)
    with Connection("filesystem://", transport_options=folders) as conn:
        Queue("fs-observer", exchange, routing_key="seen.#")(conn.default_channel).declare()
    transport = KombuTransport("filesystem://", folders)
    _event("seen.x")
    _event("unseen.x")
    try:
        result = relay_once(transport)
    finally:
        transport.close()

    assert result.published == 2
    assert result.unroutable == {"unseen.x": 1}
    assert len(list(tmp_path.glob("*.fs-observer.msg"))) == 1
