"""Subscribers run effectively once: failures retry through outbox rows (delays in the database), and duplicate
deliveries of one event, sequential or concurrent, in-process or through a real worker, have one effect."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection

from apps.core.task_contract import OUTBOX_DELIVER_EVENT
from apps.orders.models import Order, Reservation
from apps.orders.sagas import CHECKOUT
from apps.orders.services import order_place
from apps.orders.subscribers import START_CHECKOUT
from apps.outbox.delivery import event_deliver
from apps.outbox.messages import ClaimedRow, event_envelope
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.relay import _DELIVERY_NAMESPACE
from apps.sagas.models import SagaInstance
from tests.database import backends_waiting_on_locks, other_connection
from tests.helpers import wait_until
from tests.reliability.support import RELAY_ENV, RestartableWorker, beat, private_redis
from workers import app

pytestmark = pytest.mark.django_db(transaction=True)

SUBSCRIBER = START_CHECKOUT
SAGAS = SagaInstance._meta.db_table
FAILURES = 2
BACKOFF_BASE_MS = 100


@pytest.fixture
def saga_starts_fail_twice():
    """The subscriber's write (the checkout saga's instance) raises in PostgreSQL the first FAILURES times; a
    sequence counts attempts across rollbacks."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE test_saga_start_attempts")
        cursor.execute(f"""
            CREATE FUNCTION test_fail_saga_starts() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('test_saga_start_attempts') <= {FAILURES} THEN
                    RAISE EXCEPTION 'injected failure of saga start attempt %', currval('test_saga_start_attempts');
                END IF;
                RETURN NEW;
            END $$""")
        cursor.execute(f"CREATE TRIGGER test_fail_saga_starts BEFORE INSERT ON {SAGAS} "
                       "FOR EACH ROW EXECUTE FUNCTION test_fail_saga_starts()")

    def attempts() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM test_saga_start_attempts")
            return cursor.fetchone()[0]

    yield attempts
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS test_fail_saga_starts ON {SAGAS}")
        cursor.execute("DROP FUNCTION IF EXISTS test_fail_saga_starts()")
        cursor.execute("DROP SEQUENCE IF EXISTS test_saga_start_attempts")


def _envelope(order: Order) -> dict:
    """The order.placed event exactly as the relay would put it on the wire."""
    row = OutboxMessage.objects.get(kind=OutboxMessage.Kind.EVENT, key=f"order:{order.pk}")
    return json.loads(event_envelope(ClaimedRow(
        id=row.id, message_id=str(row.message_id), kind=row.kind, name=row.name, key=row.key, queue=row.queue,
        payload=row.payload, encrypted=row.encrypted, headers_json=json.dumps(row.headers), created_at=row.created_at,
    )))


def _assert_one_effect(order: Order, event: dict) -> None:
    """One checkout saga started, by this event (its steps run later, through the outbox)."""
    sagas = list(SagaInstance.objects.filter(name=CHECKOUT, key=str(order.pk)))
    assert [saga.input["event_id"] for saga in sagas] == [event["id"]]
    assert InboxEntry.objects.filter(consumer=SUBSCRIBER, message_id=event["id"]).count() == 1
    assert not OutboxMessage.objects.filter(name=OUTBOX_DELIVER_EVENT).exists(), "no retry was scheduled"


class SagaStartLock:
    """Blocks inserts into the saga table from another connection, so concurrent deliveries pile up: the first
    behind this lock (its inbox row written), the others behind the first's inbox row."""

    def __init__(self) -> None:
        self.conn = other_connection()
        self.conn.execute(f"LOCK TABLE {SAGAS} IN SHARE MODE")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def test_a_failing_subscriber_is_retried_through_the_outbox_until_it_succeeds_once(
    api_client, tmp_path, saga_starts_fail_twice
):
    env = {**RELAY_ENV, "OUTBOX_BACKOFF_BASE_MS": str(BACKOFF_BASE_MS)}
    with private_redis(tmp_path) as broker:
        worker = RestartableWorker(tmp_path, "--concurrency", "2", broker_url=broker.url, **env)
        try:
            worker.start()
            with beat(tmp_path, broker_url=broker.url, **env):
                response = api_client.post("/api/orders/", {"sku": "BOOK-1", "quantity": 1}, format="json")
                assert response.status_code == 201
                order = Order.objects.get(pk=response.json()["id"])
                wait_until(lambda: Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED, timeout=60,
                           message="the checkout after two failed starts")
        finally:
            worker.stop()

    assert saga_starts_fail_twice() == FAILURES + 1
    event_row = OutboxMessage.objects.get(kind=OutboxMessage.Kind.EVENT, name="order.placed", key=f"order:{order.pk}")
    assert SagaInstance.objects.filter(name=CHECKOUT, key=str(order.pk)).count() == 1
    assert Reservation.objects.filter(order=order).count() == 1
    assert str(Reservation.objects.get(order=order).event_id) == str(event_row.message_id)
    assert InboxEntry.objects.filter(consumer=SUBSCRIBER, message_id=event_row.message_id).count() == 1

    retries = list(OutboxMessage.objects.filter(kind=OutboxMessage.Kind.TASK, name=OUTBOX_DELIVER_EVENT)
                   .order_by("id"))
    # The attempt rides the row's internal context (the one task failure policy, workers/task.py).
    assert [row.context["attempt"] for row in retries] == [2, 3]
    assert [json.loads(row.payload)["kwargs"] for row in retries] == [{}, {}]
    for failed_attempt, row in enumerate(retries, start=1):
        subscriber, event = json.loads(row.payload)["args"]
        assert (subscriber, event["id"]) == (SUBSCRIBER, str(event_row.message_id))
        assert row.key == f"{SUBSCRIBER}:order:{order.pk}" and row.queue == "events"
        assert row.status == OutboxMessage.Status.PUBLISHED and row.published_at >= row.available_at
        # The delay lives in the row (full jitter up to base * 2**attempt), never in a broker ETA.
        ceiling = timedelta(milliseconds=BACKOFF_BASE_MS * 2 ** failed_attempt)
        assert timedelta(0) < row.available_at - row.created_at <= ceiling
    log = worker.logs()
    assert log.count(f"Subscriber {SUBSCRIBER} failed") == FAILURES
    assert "injected failure of saga start attempt 2" in log


def test_the_same_event_delivered_twice_in_process_has_one_effect(user):
    order = order_place(owner=user, sku="BOOK-1", quantity=1)
    event = _envelope(order)

    assert event_deliver(subscriber=SUBSCRIBER, event=event) == "handled"
    assert event_deliver(subscriber=SUBSCRIBER, event=event) == "duplicate"

    _assert_one_effect(order, event)


def test_concurrent_duplicate_deliveries_in_process_have_one_effect(user):
    order = order_place(owner=user, sku="BOOK-1", quantity=1)
    event = _envelope(order)
    results: list[str] = []

    def deliver() -> None:
        try:
            results.append(event_deliver(subscriber=SUBSCRIBER, event=event))
        finally:
            connection.close()

    lock = SagaStartLock()
    threads = [threading.Thread(target=deliver) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        # Both in flight at once: one behind the table lock, the other behind the first's inbox row.
        wait_until(lambda: backends_waiting_on_locks() >= 2, timeout=20, message="both deliveries to block")
    finally:
        lock.release()
        for thread in threads:
            thread.join(timeout=30)

    assert sorted(results) == ["duplicate", "handled"]
    _assert_one_effect(order, event)


def test_the_same_delivery_sent_twice_to_a_real_worker_has_one_effect(user, tmp_path):
    # No beat and no relay (a worker on the outbox queue would start one): only the two messages sent below
    # deliver this event.
    order = order_place(owner=user, sku="BOOK-1", quantity=1)
    event = _envelope(order)
    # The id the relay gives this delivery, so the second message is what a broker redelivery looks like.
    task_id = str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{event['id']}:{SUBSCRIBER}"))
    with private_redis(tmp_path) as broker:
        worker = RestartableWorker(tmp_path, "-Q", "events", "--concurrency", "2", broker_url=broker.url, **RELAY_ENV)
        try:
            worker.start()
            lock = SagaStartLock()
            try:
                with app.connection_for_write(broker.url) as conn:
                    for _ in range(2):
                        app.send_task(OUTBOX_DELIVER_EVENT, args=[SUBSCRIBER, event], task_id=task_id,
                                      connection=conn)
                wait_until(lambda: backends_waiting_on_locks() >= 2, timeout=30,
                           message="both deliveries to run at once in the worker")
            finally:
                lock.release()
            wait_until(lambda: len(_task_results(worker.log.read_text(), task_id)) == 2, timeout=30,
                       message="both deliveries to finish")
        finally:
            worker.stop()

    assert sorted(_task_results(worker.logs(), task_id)) == ["'duplicate'", "'handled'"]
    _assert_one_effect(order, event)


def _task_results(log: str, task_id: str) -> list[str]:
    """Return values the worker logged for task ``task_id`` (Celery's "Task … succeeded" lines)."""
    results = []
    for line in log.splitlines():
        if line.startswith("{") and f"[{task_id}] succeeded" in line:
            results.append(json.loads(line)["data"]["return_value"])
    return results
