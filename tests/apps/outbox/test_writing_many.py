"""publish_many() and enqueue_many(): order per key, all-or-nothing validation, encryption, locks, relay."""

import base64
import json
import threading
import uuid

import pytest
from cryptography.fernet import Fernet
from django.db import connection, transaction

from apps.core.crypto import decrypt_text
from apps.core.request_context import set_request_id
from apps.outbox.errors import OutboxError
from apps.outbox.models import OutboxMessage
from apps.outbox.relay import relay_once
from apps.outbox.transports import open_transport
from apps.outbox.writing import Dispatch, Event, enqueue_many, publish, publish_many
from tests.database import backends_waiting_on_locks, other_connection
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_is_written_in_order_with_headers_and_context_per_row():
    from apps.flags.context import set_context

    set_request_id("req-9")
    set_context({"user_id": "7"})
    try:
        with transaction.atomic():
            messages = publish_many([Event("t", {"n": n}, key=f"k{n % 2}", headers={"n": n}) for n in range(6)])
    finally:
        set_request_id(None)
        set_context(None)

    stored = list(OutboxMessage.objects.order_by("id"))
    assert [m.pk for m in messages] == [m.pk for m in stored]
    assert [json.loads(m.payload)["n"] for m in stored] == list(range(6))
    assert [m.key for m in stored] == ["k0", "k1"] * 3
    for message, row in zip(messages, stored, strict=True):
        assert row.headers == {"message_id": str(row.message_id), "request_id": "req-9", "n": row.headers["n"]}
        assert message.headers == row.headers and message.created_at == row.created_at
        assert message.get_deferred_fields() == set()  # built from the INSERT, every field present
        assert row.context == {"carriers": {"flags": {"user_id": "7"}}}
    assert len({m.message_id for m in stored}) == 6


@pytest.mark.parametrize("bad", [
    Event("t", {"when": object()}), Event("t", {}, key=""), Event("", {}), {"topic": "t"},
], ids=["payload", "key", "topic", "not-an-event"])
def test_one_invalid_event_rejects_the_whole_batch(bad):
    with transaction.atomic():
        with pytest.raises(OutboxError):
            publish_many([Event("t", {"ok": 1}, key="k"), bad, Event("t", {"ok": 2})])
        publish("after", {})  # nothing was sent to the database: the transaction goes on

    assert list(OutboxMessage.objects.values_list("name", flat=True)) == ["after"]


@pytest.mark.parametrize("bad", [
    Dispatch("no.such.task"), Dispatch("core.heartbeat", args=[float("nan")]), Dispatch("core.heartbeat", delay=-1),
    Dispatch("core.heartbeat", dedup_key=""), Dispatch("core.heartbeat", message_id="not-a-uuid"),
], ids=["task", "args", "delay", "dedup-key", "message-id"])
def test_one_invalid_dispatch_rejects_the_whole_batch(bad):
    with transaction.atomic():
        with pytest.raises(OutboxError):
            enqueue_many([Dispatch("core.heartbeat", args=["ok"]), bad])

    assert not OutboxMessage.objects.exists()


def test_enqueue_many_keeps_dedup_keys_delays_message_ids_and_carriers():
    chosen = uuid.uuid4()
    with transaction.atomic():
        [held] = enqueue_many([Dispatch("core.heartbeat", args=["first"], dedup_key="d1")])
        messages = enqueue_many([
            Dispatch("core.heartbeat", args=["a"], dedup_key="d1"),  # held by the row above
            Dispatch("core.heartbeat", args=["b"], dedup_key="d2"),
            Dispatch("core.heartbeat", args=["c"], dedup_key="d2"),  # held by the row before it
            Dispatch("core.heartbeat", args=["d"], delay=30, message_id=chosen, carriers={"schedules.fire": 5}),
        ])

    assert messages[0].pk == held.pk and messages[2].pk == messages[1].pk
    assert OutboxMessage.objects.count() == 3
    delayed = OutboxMessage.objects.get(message_id=chosen)
    assert messages[3].pk == delayed.pk
    assert (delayed.available_at - delayed.created_at).total_seconds() == 30
    assert delayed.context == {"carriers": {"schedules.fire": 5}}
    assert delayed.queue == "default" and json.loads(delayed.payload) == {"args": ["d"], "kwargs": {}}


def test_encrypted_topics_stay_encrypted_in_a_batch_and_the_relay_delivers_every_event(settings, broker_redis):
    from django.conf import settings as django_settings
    from kombu import Connection, Exchange, Queue

    settings.FERNET_KEYS = [Fernet.generate_key().decode()]
    settings.OUTBOX_ENCRYPTED_TOPICS = ["secret.topic"]
    exchange = Exchange(django_settings.OUTBOX_EVENTS_EXCHANGE, type="topic")
    with Connection(django_settings.CELERY_BROKER_URL) as conn:
        Queue("observer", exchange, routing_key="#")(conn.channel()).declare()
    with transaction.atomic():
        publish_many([Event("secret.topic", {"card": "tok_1"}, key="c"), Event("plain.topic", {"n": 1}, key="c"),
                      Event("secret.topic", {"card": "tok_2"}, key="c")])

    secret = OutboxMessage.objects.filter(name="secret.topic").order_by("id")
    assert all(row.encrypted and "tok_" not in row.payload for row in secret)
    assert [json.loads(decrypt_text(row.payload))["card"] for row in secret] == ["tok_1", "tok_2"]
    transport = open_transport()
    try:
        assert relay_once(transport).published == 3
    finally:
        transport.close()
    received = [json.loads(base64.b64decode(json.loads(raw)["body"]))
                for raw in reversed(broker_redis.lrange("observer", 0, -1))]
    assert [(e["topic"], e["payload"]) for e in received] == [
        ("secret.topic", {"card": "tok_1"}), ("plain.topic", {"n": 1}), ("secret.topic", {"card": "tok_2"})]


def test_a_concurrent_batch_of_the_same_key_waits_so_ids_follow_commit_order():
    """The first transaction's batch holds key K; a second batch with K waits for its commit, so its ids
    come after the first's although it started while the first was open."""
    first_written = threading.Event()
    release_first = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                publish_many([Event("t", {"tx": 1, "n": n}, key="K") for n in range(3)])
                first_written.set()
                release_first.wait(timeout=20)
                publish_many([Event("t", {"tx": 1, "n": 3}, key="K")])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    def second() -> None:
        try:
            first_written.wait(timeout=20)
            with transaction.atomic():
                publish_many([Event("t", {"tx": 2, "n": n}, key=key) for n, key in enumerate(["other", "K", "K"])])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: backends_waiting_on_locks() >= 1, timeout=20, message="the second batch to wait for K")
    finally:
        release_first.set()
        for thread in threads:
            thread.join(timeout=30)

    assert errors == []
    payloads = OutboxMessage.objects.filter(key="K").order_by("id").values_list("payload", flat=True)
    ordered = [json.loads(payload) for payload in payloads]
    assert [(e["tx"], e["n"]) for e in ordered] == [(1, 0), (1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]


def _holds_lock_of(key: str) -> bool:
    backend = connection.connection.info.backend_pid
    with other_connection(autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 7)", [backend, key]
        ).fetchone()[0] == 1


def test_a_key_lock_released_with_a_rolled_back_savepoint_is_taken_again():
    """Locks are remembered per transaction, but PostgreSQL releases one taken inside a savepoint that
    rolls back: the next write of that key must lock it again."""
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            publish("t", {}, key="S")
            assert _holds_lock_of("S")
            raise RuntimeError
        assert not _holds_lock_of("S")
        publish("t", {}, key="S")
        assert _holds_lock_of("S")


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "OUTBOX_PREPARED_STATEMENTS-off"])
def test_the_insert_is_a_prepared_statement_unless_turned_off(settings, prepared):
    settings.OUTBOX_PREPARED_STATEMENTS = prepared
    connection.close()  # a fresh session: nothing prepared on it yet
    with transaction.atomic():
        publish_many([Event("t", {"n": n}) for n in range(2)])
        publish("t", {})
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO outbox%'")
            [count] = cursor.fetchone()

    assert count == (1 if prepared else 0)
    assert OutboxMessage.objects.count() == 3
