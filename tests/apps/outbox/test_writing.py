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
from tests.database import backends_waiting_on_locks, other_connection

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


def test_enqueue_takes_a_caller_chosen_message_id():
    """A caller that stores the task id in its own row first (a schedule fire) picks it instead of updating."""
    chosen = uuid.uuid4()
    with transaction.atomic():
        message = enqueue("core.heartbeat", message_id=chosen)

    stored = OutboxMessage.objects.get(pk=message.pk)
    assert stored.message_id == chosen and stored.headers["message_id"] == str(chosen)
    with pytest.raises(OutboxError, match="uuid"), transaction.atomic():
        enqueue("core.heartbeat", message_id=str(uuid.uuid4()))


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


# --- issue 15: database clock, internal context, dedup, several keys in one transaction ------------------------

def _database_now():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def test_row_times_come_from_the_database_clock_not_a_skewed_app_server(monkeypatch):
    """Issue 15 §6: created_at/available_at are the database's now() (+ delay), whatever the app clock says."""
    skewed = timezone.now() + timedelta(hours=3)
    monkeypatch.setattr(timezone, "now", lambda: skewed)

    before = _database_now()
    with transaction.atomic():
        event = publish("t", {})
        task = enqueue("core.heartbeat", delay=timedelta(seconds=30))
    after = _database_now()

    for message in (event, task):
        stored = OutboxMessage.objects.get(pk=message.pk)
        assert before <= stored.created_at <= after
        assert message.created_at == stored.created_at and message.available_at == stored.available_at
    assert OutboxMessage.objects.get(pk=event.pk).available_at == event.created_at
    assert OutboxMessage.objects.get(pk=task.pk).available_at == task.created_at + timedelta(seconds=30)


def test_the_ambient_context_goes_to_the_internal_column_never_the_public_headers():
    """Issue 15 §10: carriers (here the flags app's) are captured into ``context``; headers stay public."""
    from apps.flags.context import set_context

    set_context({"user_id": "42", "groups": ["ops"], "staff": True})
    try:
        with transaction.atomic():
            message = publish("t", {}, headers={"tenant": "acme"})
            task = enqueue("core.heartbeat")
    finally:
        set_context(None)

    for row in OutboxMessage.objects.filter(pk__in=[message.pk, task.pk]):
        assert row.context == {"carriers": {"flags": {"user_id": "42", "groups": ["ops"], "staff": True}}}
        assert set(row.headers) <= {"message_id", "request_id", "traceparent", "tracestate", "tenant"}
    with transaction.atomic():
        bare = publish("t", {})
    assert OutboxMessage.objects.get(pk=bare.pk).context == {}


def test_enqueue_with_a_dedup_key_writes_one_row_and_returns_it_again():
    """Issue 15 §2: a second enqueue with the same dedup_key writes nothing and does not break the transaction."""
    with transaction.atomic():
        first = enqueue("core.heartbeat", args=["a"], dedup_key="report:2026-12-01")
        again = enqueue("core.heartbeat", args=["b"], dedup_key="report:2026-12-01")
        other = enqueue("core.heartbeat", args=["c"], dedup_key="report:2026-12-02")
        publish("t", {})  # the transaction is still usable

    assert again.pk == first.pk and again.message_id == first.message_id
    assert OutboxMessage.objects.filter(dedup_key="report:2026-12-01").get().payload == '{"args":["a"],"kwargs":{}}'
    assert OutboxMessage.objects.count() == 3 and other.pk != first.pk
    with pytest.raises(OutboxError, match="dedup_key"), transaction.atomic():
        enqueue("core.heartbeat", dedup_key="")


@pytest.mark.parametrize("holder_outcome", ["commit", "rollback"])
def test_two_transactions_racing_for_one_dedup_key_leave_one_row(holder_outcome):
    """Issue 15 §2, raced: a second transaction enqueueing the same dedup_key while the first is open waits
    for it; if the first commits it gets the first's row back (no IntegrityError, its transaction goes
    on), if the first rolls back its own row is written."""
    import threading

    from django.db import connection

    from tests.helpers import wait_until

    holder = other_connection()  # the first transaction, holding the key uncommitted
    holder.execute(
        "INSERT INTO outbox_outboxmessage (message_id, kind, name, queue, payload, encrypted, headers, context, "
        "dedup_key, status, attempts, last_error) VALUES (gen_random_uuid(), 'task', 'core.heartbeat', 'default', "
        "'{\"args\":[\"first\"],\"kwargs\":{}}', false, '{}', '{}', 'race-key', 'pending', 0, '')"
    )
    outcome: dict = {}

    def second() -> None:
        try:
            with transaction.atomic():
                outcome["row"] = enqueue("core.heartbeat", args=["second"], dedup_key="race-key")
                outcome["after"] = publish("t", {"still": "usable"})
        except Exception as exc:  # reported below
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=second)
    thread.start()
    try:
        wait_until(lambda: backends_waiting_on_locks() >= 1, timeout=20,
                   message="the second writer to wait for the first")
    finally:
        holder.commit() if holder_outcome == "commit" else holder.rollback()
        holder.close()
        thread.join(timeout=30)

    assert "error" not in outcome, outcome.get("error")
    [stored] = OutboxMessage.objects.filter(dedup_key="race-key")
    winner = "first" if holder_outcome == "commit" else "second"
    assert stored.payload == f'{{"args":["{winner}"],"kwargs":{{}}}}'
    assert outcome["row"].pk == stored.pk
    assert OutboxMessage.objects.filter(pk=outcome["after"].pk).exists()


def test_lock_keys_lets_transactions_write_several_keys_in_opposite_orders():
    """Issue 15 §7: with lock_keys() first, [A, B] and [B, A] both commit; the interleaving is the one
    that deadlocks without it (A taken by one, B by the other; see the next test)."""
    import threading

    from django.db import connection

    from apps.outbox.writing import lock_keys
    from tests.helpers import wait_until

    first_holds_a = threading.Event()
    errors: list[BaseException] = []

    def write(keys: list[str], *, signal: threading.Event | None = None, wait: threading.Event | None = None):
        try:
            if wait is not None:
                wait.wait(timeout=20)
            with transaction.atomic():
                lock_keys(keys)
                publish("t", {"key": keys[0]}, key=keys[0])
                if signal is not None:
                    signal.set()
                    # Hold A until the other transaction is waiting for a key lock.
                    wait_until(lambda: backends_waiting_on_locks() >= 1, timeout=20, message="the other writer to wait")
                publish("t", {"key": keys[1]}, key=keys[1])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(["A", "B"],), kwargs={"signal": first_holds_a}),
               threading.Thread(target=write, args=(["B", "A"],), kwargs={"wait": first_holds_a})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(OutboxMessage.objects.values_list("key", flat=True)) == ["A", "A", "B", "B"]


def test_writing_keys_in_opposite_orders_without_lock_keys_can_deadlock():
    """Issue 15 §7: the hazard docs/outbox.md documents, shown: PostgreSQL aborts one of the two."""
    import threading

    from django.db import connection

    a_taken, b_taken = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def write(first: str, second: str, mine: threading.Event, theirs: threading.Event) -> None:
        try:
            with transaction.atomic():
                publish("t", {}, key=first)
                mine.set()
                theirs.wait(timeout=20)
                publish("t", {}, key=second)
        except BaseException as exc:  # the deadlock victim
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=("A", "B", a_taken, b_taken)),
               threading.Thread(target=write, args=("B", "A", b_taken, a_taken))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(errors) == 1 and "deadlock" in str(errors[0])
