"""relay_once against the real PostgreSQL and Redis: order per key, dead letters, retries, outages."""

import base64
import json
from datetime import timedelta

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
    assert OutboxMessage.objects.get(pk=blocked.pk).attempts == 0  # behind a failed row of its key: not charged
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

    records = [json.loads(raw) for raw in broker_redis.lrange("events", 0, -1)]
    assert {record["headers"]["task"] for record in records} == {"outbox.deliver_event"}
    deliveries = [json.loads(base64.b64decode(record["body"]))[0] for record in records]
    # order.placed has two subscribers: the checkout's and the webhooks' fan-out.
    assert sorted(args[0] for args in deliveries) == ["notifications.webhooks.order.placed", "orders.start_checkout"]
    assert {args[1]["id"] for args in deliveries} == {str(message.message_id)}


def _params():
    connection.ensure_connection()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params


def _heartbeat(name: str, *, key: str | None = None, queue: str | None = None, **options) -> OutboxMessage:
    with transaction.atomic():
        return enqueue("core.heartbeat", args=[name], key=key, queue=queue, **options)


def _task_ids(broker_redis, queue: str) -> list[str]:
    """Task ids on a Redis queue, oldest first."""
    return [json.loads(raw)["headers"]["id"] for raw in reversed(broker_redis.lrange(queue, 0, -1))]


@pytest.mark.parametrize("skew", [timedelta(hours=1), -timedelta(hours=1)], ids=["app-clock-ahead", "app-clock-behind"])
def test_claim_compares_available_at_with_the_database_clock(transport, broker_redis, monkeypatch, skew):
    """issue 15 §1 (relay half): "due" is the database's now(), not the app server's clock."""
    due = _heartbeat("due")
    later = _heartbeat("later")
    with connection.cursor() as cursor:  # set on the database clock, as the writers do
        cursor.execute("UPDATE outbox_outboxmessage SET available_at = now() - interval '1 second' WHERE id = %s",
                       [due.pk])
        cursor.execute("UPDATE outbox_outboxmessage SET available_at = now() + interval '30 minutes' WHERE id = %s",
                       [later.pk])
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + skew)  # this app server's clock is off by an hour

    relay_once(transport)

    statuses = dict(OutboxMessage.objects.filter(pk__in=[due.pk, later.pk]).values_list("pk", "status"))
    assert statuses == {due.pk: "published", later.pk: "pending"}
    assert _task_ids(broker_redis, "default") == [str(due.message_id)]


def test_a_failed_key_skips_its_later_rows_in_the_batch_on_other_queues(transport, broker_redis):
    """issue 15 §4: once a key fails in a batch, its later rows are not sent and not charged.

    Row 1 of key k goes to `default`, whose push fails (WRONGTYPE); row 2 of k goes to `events`, which works.
    Row 2 must not reach the broker before row 1, and must not use up an attempt; key other is unaffected.
    """
    broker_redis.set("default", "not a list")
    first = _heartbeat("k-1", key="k")
    second = _heartbeat("k-2", key="k", queue="events")
    other = _heartbeat("other-1", key="other", queue="events")

    result = relay_once(transport)

    rows = {row.pk: row for row in OutboxMessage.objects.filter(pk__in=[first.pk, second.pk, other.pk])}
    assert (rows[first.pk].status, rows[first.pk].attempts) == ("pending", 1)
    assert "WRONGTYPE" in rows[first.pk].last_error
    assert (rows[second.pk].status, rows[second.pk].attempts, rows[second.pk].last_error) == ("pending", 0, "")
    assert rows[other.pk].status == "published"
    assert _task_ids(broker_redis, "events") == [str(other.message_id)], "k's second row was not sent"
    assert (result.published, result.failed, result.skipped) == (1, 1, 1)

    broker_redis.delete("default")
    OutboxMessage.objects.filter(pk=first.pk).update(available_at=timezone.now())
    relay_once(transport)
    assert _task_ids(broker_redis, "default") == [str(first.message_id)]
    assert _task_ids(broker_redis, "events") == [str(other.message_id), str(second.message_id)]


def test_a_delayed_message_does_not_hold_back_its_key(transport, broker_redis):
    """issue 15 §7: enqueue(key=K, delay=1h) no longer blocks the later due messages of K."""
    delayed = _heartbeat("timeout", key="saga:1", delay=timedelta(hours=1))
    step = _heartbeat("step", key="saga:1")

    relay_once(transport)

    assert OutboxMessage.objects.get(pk=step.pk).status == "published"
    assert OutboxMessage.objects.get(pk=delayed.pk).status == "pending"
    assert _task_ids(broker_redis, "default") == [str(step.message_id)]


def test_a_delayed_message_written_with_hold_key_holds_back_its_key(transport, broker_redis):
    """issue 15 §7: the opt-in: a delayed message asked to keep its key's order holds later ones back."""
    _heartbeat("first", key="k", delay=timedelta(hours=1), hold_key=True)
    later = _heartbeat("second", key="k")

    result = relay_once(transport)

    assert (result.held_back, result.published) == (1, 0)
    assert OutboxMessage.objects.get(pk=later.pk).status == "pending"


def test_a_row_waiting_out_a_relay_retry_still_holds_back_its_key(transport, broker_redis):
    """issue 15 §7: a row that failed to publish (attempts > 0) keeps its key's order while it waits."""
    failed = _heartbeat("failed", key="k")
    OutboxMessage.objects.filter(pk=failed.pk).update(attempts=1, available_at=timezone.now() + timedelta(hours=1))
    later = _heartbeat("later", key="k")

    result = relay_once(transport)

    assert (result.held_back, result.published) == (1, 0)
    assert OutboxMessage.objects.get(pk=later.pk).status == "pending"


def test_events_that_reach_no_queue_are_counted(transport, broker_redis):
    """issue 15 §8: an event with no bound queue and no subscriber is published, but counted, not silent."""
    from apps.outbox import metrics

    before = metrics.UNROUTABLE.labels("nobody.listens")._value.get()
    _publish("nobody.listens", {"n": 1})
    _publish("nobody.listens", {"n": 2})

    result = relay_once(transport)

    assert result.published == 2
    assert result.unroutable == {"nobody.listens": 2}
    assert metrics.UNROUTABLE.labels("nobody.listens")._value.get() == before + 2


def test_an_encrypted_task_shows_no_arguments_in_its_celery_headers(transport, broker_redis, settings):
    """Pins: encrypted retry and dead-letter rows were relayed with the decrypted arguments as Celery's
    argsrepr, which workers write into every "Task received" and failure log line."""
    from apps.outbox.writing import enqueue_carrying

    settings.FERNET_KEYS = [Fernet.generate_key().decode()]
    with transaction.atomic():
        enqueue_carrying(task_name="core.heartbeat", args=["4111-SECRET-CARD"], kwargs={}, key=None, queue=None,
                         headers={}, context={}, encrypt=True)
    relay_once(transport)

    [raw] = broker_redis.lrange("default", 0, -1)
    record = json.loads(raw)
    assert record["headers"]["argsrepr"] == "<encrypted>"
    assert "4111-SECRET-CARD" not in json.dumps(record["headers"])
    args, _, _ = json.loads(base64.b64decode(record["body"]))
    assert args == ["4111-SECRET-CARD"]  # the worker still gets the arguments
