"""The broker goes away while orders keep coming: requests succeed, the backlog waits in PostgreSQL and drains
once the broker is back, and an outage never uses up a message's attempts.

The database restart and the RabbitMQ outage, with orders placed over HTTP, are in
test_orders_database_restart.py and test_orders_rabbitmq_outage.py, on private servers.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from kombu import Connection, Exchange, Queue

from apps.core.task_contract import OUTBOX_RELAY
from apps.orders.models import Order
from apps.outbox.models import OutboxMessage, RelayStatus
from apps.outbox.selectors import outbox_stats
from tests.helpers import wait_until
from tests.reliability.support import RELAY_ENV, RestartableWorker, beat, decode_record, private_redis, relay_pid
from workers import app

pytestmark = pytest.mark.django_db(transaction=True)

# A lease longer than the outage, so the same relay is seen failing and recovering. Max attempts is low, so
# an outage wrongly counted as failed attempts would dead-letter messages within seconds.
ENV = {**RELAY_ENV, "OUTBOX_RELAY_LEASE_SECONDS": "30", "OUTBOX_MAX_ATTEMPTS": "3", "OUTBOX_BACKOFF_BASE_MS": "50",
       # A stopped non-persistent Redis loses the checkout steps queued in it; the saga sweeper sends them
       # again once they are this late (60 s by default).
       "SAGAS_STEP_LOST_SECONDS": "10"}
OBSERVER = "outage-observer"
GATE_PASSWORD = "gate"
BEFORE, DURING = 5, 30
UNAVAILABLE = "cycle failed (1 so far in this run)"
CRASHED = "Unrecoverable error"
# celery is pinned to 5.6.3: a 5.7.0 worker that loses its Redis broker while holding an unacknowledged
# message (the acks_late relay always does) exits with "Unrecoverable error: ... 'hostname'" instead of
# reconnecting. test_worker_survives_a_broker_outage guards the pin.


def _place(api_client) -> int:
    response = api_client.post("/api/orders/", {"sku": "BOOK-1", "quantity": 1}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _bind_observer(url: str) -> None:
    exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic")
    with Connection(url) as conn:
        Queue(OBSERVER, exchange, routing_key="order.placed")(conn.channel()).declare()


def _confirmed(order_ids: list[int]) -> bool:
    """Checked out: the order.placed event reached the subscriber, which started the saga, which ended."""
    return Order.objects.filter(pk__in=order_ids, status=Order.Status.CONFIRMED).count() == len(order_ids)


def test_orders_survive_a_broker_outage_and_drain_after_it(api_client, tmp_path):
    with private_redis(tmp_path) as broker:
        _bind_observer(broker.url)
        worker = RestartableWorker(tmp_path, "--concurrency", "2", broker_url=broker.url, **ENV)
        try:
            worker.start()
            with beat(tmp_path, broker_url=broker.url, **ENV):
                before = [_place(api_client) for _ in range(BEFORE)]
                # Quiet before the outage: a non-persistent Redis loses queued task messages when it stops.
                wait_until(lambda: _confirmed(before), timeout=60, message="orders placed before the outage")
                wait_until(relay_pid, timeout=30, message="a relay serving its lease")
                # The confirm step's order.confirmed events are relayed after the orders are confirmed.
                wait_until(lambda: outbox_stats()["counts"]["pending"] == 0, timeout=30,
                           message="nothing pending before the outage")
                observed_before = broker.client().llen(OBSERVER)

                broker.stop()
                during = [_place(api_client) for _ in range(DURING)]
                # The relay keeps trying, backing off, while these orders' events are pending; its status row counts
                # the failed cycles (the log says it once).
                wait_until(lambda: RelayStatus.objects.filter(error_count__gte=4, last_error__contains="Connection")
                           .exists(), timeout=30, message="the relay to hit the outage")
                assert worker.log.read_text().count(UNAVAILABLE) == 1, "the outage is logged once, not per cycle"
                stats = outbox_stats()
                assert stats["counts"]["pending"] == DURING
                assert stats["oldest_pending_age_seconds"] > 0

                # The restarted broker is empty: bind the observer before anyone else can reach it, or the
                # first events would find no binding and be dropped as unroutable (as RabbitMQ would too).
                broker.start("--requirepass", GATE_PASSWORD)
                _bind_observer(f"redis://:{GATE_PASSWORD}@127.0.0.1:{broker.port}/0")
                # Standing in for the supervisor (compose `restart: unless-stopped`, Kubernetes) when the worker
                # died of the outage (celery 5.7.0 does; test_worker_survives_a_broker_outage covers that crash).
                crashed = CRASHED in worker.log.read_text()
                if crashed:
                    worker.kill_group()
                broker.client(password=GATE_PASSWORD).config_set("requirepass", "")
                if crashed:
                    worker.start()

                wait_until(lambda: _confirmed(during), timeout=90, message="the backlog to drain after the outage")
                wait_until(lambda: broker.client().llen(OBSERVER) >= DURING, timeout=30,
                           message="every event on the restarted broker")
        finally:
            worker.stop()
        observed = [decode_record(raw) for raw in broker.client().lrange(OBSERVER, 0, -1)]

    assert observed_before == BEFORE
    during_events = OutboxMessage.objects.filter(kind=OutboxMessage.Kind.EVENT, name="order.placed",
                                                 key__in=[f"order:{order_id}" for order_id in during])
    assert sorted(e["id"] for e in observed) == sorted(str(row.message_id) for row in during_events)
    assert _confirmed(during)

    stats = outbox_stats()
    assert stats["counts"]["dead"] == 0 and stats["counts"]["pending"] == 0
    # Published on the first attempt that reached a broker: the outage consumed no attempts.
    assert sorted(set(during_events.values_list("attempts", flat=True))) == [1]


class WorkerDied(AssertionError):
    """The worker process ended (or logged an unrecoverable error) because the broker went away."""


def test_worker_survives_a_broker_outage(tmp_path):
    with private_redis(tmp_path) as broker:
        worker = RestartableWorker(tmp_path, "--concurrency", "2", broker_url=broker.url, **ENV)
        try:
            worker.start()
            with app.connection_for_write(broker.url) as connection:
                app.send_task(OUTBOX_RELAY, connection=connection)
            wait_until(relay_pid, timeout=30, message="the relay task to run (it stays unacknowledged)")

            broker.stop()
            # Either the worker retries the connection, or it has died.
            wait_until(lambda: "Cannot connect to" in worker.log.read_text() or worker.process.poll() is not None
                       or CRASHED in worker.log.read_text(), timeout=30, message="the worker to notice the outage")
            if CRASHED in worker.log.read_text() or worker.process.poll() is not None:
                raise WorkerDied(worker.log.read_text()[-3000:])

            broker.start()
            wait_until(lambda: worker.log.read_text().count("Connected to redis://") >= 2, timeout=30,
                       message="the worker to reconnect")
        finally:
            worker.stop()
