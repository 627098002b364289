"""relay_once against the real PostgreSQL and Redis: order per key, dead letters, retries, outages."""

import base64
import json

import psycopg
import pytest
from cryptography.fernet import Fernet
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from apps.outbox import enqueue, publish
from apps.outbox.models import OutboxMessage
from apps.outbox.relay import relay_once
from apps.outbox.transports import BrokerUnavailable, RedisTransport, open_transport

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def transport(broker_redis):
    transport = open_transport()
    yield transport
    transport.close()


@pytest.fixture
def events_queue(broker_redis):
    """A queue bound to the events exchange for every topic, as an outside consumer would bind it."""
    from django.conf import settings
    from kombu import Connection, Exchange, Queue

    exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic")
    with Connection(settings.CELERY_BROKER_URL) as conn:
        Queue("observer", exchange, routing_key="#")(conn.channel()).declare()

    def received():
        raw_messages = reversed(broker_redis.lrange("observer", 0, -1))
        return [json.loads(base64.b64decode(json.loads(raw)["body"])) for raw in raw_messages]

    return received


def _publish(topic, payload, key=None):
    with transaction.atomic():
        return publish(topic, payload, key=key)


def test_events_reach_the_exchange_as_envelopes(transport, events_queue):
    message = _publish("thing.happened", {"n": 1}, key="k")

    result = relay_once(transport)

    assert (result.claimed, result.published) == (1, 1)
    [envelope] = events_queue()
    assert envelope["id"] == str(message.message_id)
    assert (envelope["topic"], envelope["key"], envelope["payload"]) == ("thing.happened", "k", {"n": 1})
    assert envelope["headers"]["message_id"] == str(message.message_id)
    OutboxMessage.objects.get(pk=message.pk, status="published", attempts=1)


def test_a_row_locked_by_another_relay_holds_back_its_key_only(transport, events_queue):
    first = _publish("t", {"seq": 1}, key="a")
    second = _publish("t", {"seq": 2}, key="a")
    other = _publish("t", {"seq": 1}, key="b")
    # Another relay has claimed `first` and not committed yet.
    other_relay = psycopg.connect(**_params())
    other_relay.execute("SELECT id FROM outbox_outboxmessage WHERE id = %s FOR UPDATE", [first.pk])

    relay_once(transport)
    published_while_locked = {(e["key"], e["payload"]["seq"]) for e in events_queue()}
    other_relay.rollback()
    other_relay.close()
    relay_once(transport)

    assert published_while_locked == {("b", 1)}
    assert [(e["key"], e["payload"]["seq"]) for e in events_queue()][1:] == [("a", 1), ("a", 2)]
    assert OutboxMessage.objects.filter(pk__in=[first.pk, second.pk, other.pk], status="published").count() == 3


def test_unknown_task_is_dead_lettered_without_blocking_others(transport, events_queue):
    with transaction.atomic():
        bad = OutboxMessage.objects.create(kind="task", name="ghost.task", key="a", payload='{"args":[],"kwargs":{}}')
    good = _publish("t", {"seq": 2}, key="a")

    result = relay_once(transport)

    bad.refresh_from_db()
    assert bad.status == "dead" and "Unknown task 'ghost.task'" in bad.last_error
    assert result.published == 1 and OutboxMessage.objects.get(pk=good.pk).status == "published"


@override_settings(OUTBOX_MAX_ATTEMPTS=2)
def test_failing_message_backs_off_blocks_its_key_then_goes_dead(transport, broker_redis):
    broker_redis.set("default", "not a list")  # every push to the default queue now fails (WRONGTYPE)
    with transaction.atomic():
        failing = enqueue("core.heartbeat", args=["x"], key="k")
        blocked = enqueue("core.heartbeat", args=["y"], key="k")
        free = enqueue("outbox.purge", key="other")  # default queue too: make it another queue's task
    OutboxMessage.objects.filter(pk=free.pk).update(queue="events")

    relay_once(transport)
    failing.refresh_from_db()
    assert failing.status == "pending" and failing.attempts == 1 and failing.available_at > timezone.now()
    assert "WRONGTYPE" in failing.last_error
    assert OutboxMessage.objects.get(pk=blocked.pk).attempts == 1  # same batch, same failing queue
    assert OutboxMessage.objects.get(pk=free.pk).status == "published"

    OutboxMessage.objects.filter(pk=failing.pk).update(available_at=timezone.now())
    relay_once(transport)
    failing.refresh_from_db()
    blocked.refresh_from_db()
    assert failing.status == "dead" and failing.attempts == 2
    assert blocked.status == "pending", "a later message of the key waits while the earlier one is retried"


def test_broker_outage_leaves_rows_untouched(broker_redis):
    message = _publish("t", {}, key="k")
    transport = RedisTransport("redis://127.0.0.1:1/0")

    with pytest.raises(BrokerUnavailable):
        relay_once(transport)

    message.refresh_from_db()
    assert (message.status, message.attempts, message.last_error) == ("pending", 0, "")


def test_encrypted_topics_are_stored_encrypted_and_relayed_in_clear(transport, events_queue, settings):
    settings.FERNET_KEYS = [Fernet.generate_key().decode()]
    settings.OUTBOX_ENCRYPTED_TOPICS = ["secret.topic"]
    message = _publish("secret.topic", {"card": "tok_123"})

    stored = OutboxMessage.objects.get(pk=message.pk)
    assert stored.encrypted and "tok_123" not in stored.payload
    relay_once(transport)
    assert events_queue()[0]["payload"] == {"card": "tok_123"}


def test_subscribers_get_one_task_message_each(transport, broker_redis):
    from apps.orders.services import ORDER_PLACED

    message = _publish(ORDER_PLACED, {"order_id": 1, "sku": "A", "quantity": 1, "owner_id": 1}, key="order:1")
    relay_once(transport)

    [raw] = broker_redis.lrange("events", 0, -1)
    record = json.loads(raw)
    assert record["headers"]["task"] == "outbox.deliver_event"
    args, _, _ = json.loads(base64.b64decode(record["body"]))
    assert args[0] == "orders.reserve_stock" and args[1]["id"] == str(message.message_id)


def _params():
    connection.ensure_connection()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params
