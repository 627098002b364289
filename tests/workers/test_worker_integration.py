"""Real `celery worker` and `celery beat` processes against the real brokers and the test database."""

import json
import uuid

import pytest
from django.conf import settings
from django.db import connection, transaction

from apps.core.models import Heartbeat
from apps.core.task_contract import HEARTBEAT, OUTBOX_DELIVER_EVENT, QUEUES
from apps.orders.services import order_place
from apps.outbox import enqueue
from apps.outbox.messages import ClaimedRow, event_envelope
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.relay import _DELIVERY_NAMESPACE
from apps.outbox.serving import relay_drain
from apps.sagas.models import SagaInstance
from tests.database import backends_waiting_on_locks
from tests.helpers import wait_until
from tests.processes import NO_RELAY, celery_process
from tests.workers import policy_tasks
from tests.workers.db_proxy import PostgresProxy
from tests.workers.policy_support import GateLock, backend_running
from workers import app

POLICY_TASKS = ("--include", "tests.workers.policy_tasks")

pytestmark = pytest.mark.django_db(transaction=True)

# A worker that consumes the outbox queue starts a relay, which holds one process for its lease: tasks need another.
TASK_PROCESSES = "2"


def _broker_url(name: str) -> str:
    return {"redis": settings.CELERY_BROKER_URL, "rabbitmq": settings.RABBITMQ_URL}[name]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_worker_runs_a_task_sent_by_name(broker, tmp_path, broker_redis):
    log = tmp_path / "worker.log"
    with celery_process("worker", log, "--concurrency", TASK_PROCESSES, broker_url=_broker_url(broker)):
        with app.connection_for_write(_broker_url(broker)) as connection:
            app.send_task(HEARTBEAT, args=[f"test-{broker}"], connection=connection)

        wait_until(lambda: Heartbeat.objects.filter(name=f"test-{broker}").exists(), timeout=30,
                   message=f"heartbeat over {broker}")

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    task_lines = [line for line in lines if line.get("task_name") == HEARTBEAT]
    assert task_lines, "worker logs carry task_name/task_id while a task runs"
    assert all(line["task_id"] for line in task_lines)


def test_worker_consumes_every_taskplane_queue(tmp_path, broker_redis):
    with celery_process("worker", tmp_path / "worker.log", "--concurrency", "1"):
        replies = wait_until(lambda: app.control.inspect(timeout=2).active_queues(), timeout=20)

    served = {queue["name"] for queues in replies.values() for queue in queues}
    assert served == set(QUEUES)


def test_pickle_messages_are_refused(tmp_path, broker_redis):
    log = tmp_path / "worker.log"
    with celery_process("worker", log, "--concurrency", TASK_PROCESSES):
        app.send_task(HEARTBEAT, args=["pickled"], serializer="pickle")
        app.send_task(HEARTBEAT, args=["after-pickle"])
        wait_until(lambda: Heartbeat.objects.filter(name="after-pickle").exists(), timeout=30)

    assert not Heartbeat.objects.filter(name="pickled").exists()
    assert "ContentDisallowed" in log.read_text() or "Refusing to deserialize" in log.read_text()


def test_beat_drives_the_heartbeat_through_a_worker(tmp_path, broker_redis):
    schedule = str(tmp_path / "beat-schedule")
    with celery_process("worker", tmp_path / "worker.log", "--concurrency", TASK_PROCESSES, HEARTBEAT_SECONDS="1"):
        with celery_process("beat", tmp_path / "beat.log", "--schedule", schedule, HEARTBEAT_SECONDS="1"):
            first = wait_until(lambda: Heartbeat.objects.filter(name="beat").first(), timeout=30)
            wait_until(lambda: Heartbeat.objects.get(name="beat").beat_at > first.beat_at, timeout=30,
                       message="a second heartbeat")


def _task_outcomes(log_text: str, task_id: str) -> list[str]:
    """How each run of ``task_id`` ended, from Celery's own log lines: succeeded, ignored, requeued, raised..."""
    outcomes = []
    for line in log_text.splitlines():
        if not line.startswith("{") or f"[{task_id}]" not in line:
            continue
        message = json.loads(line).get("message", "")
        for marker, outcome in (("succeeded", "succeeded"), ("ignored", "ignored"), ("raised unexpected", "raised"),
                                ("reject requeue=True", "requeued"), ("reject requeue=False", "rejected"),
                                ("retry:", "retry")):
            if f"[{task_id}] {marker}" in message:
                outcomes.append(outcome)
    return outcomes


def test_tasks_are_idempotent_when_run_twice(tmp_path, broker_redis):
    """Issue 15 (smaller debts): the same message delivered twice (a redelivery) runs twice, both runs
    succeed and leave one effect. The old test waited for the first run only and counted rows keyed by
    name, so it could not fail; this one fails if the second run errors (e.g. heartbeat_record using
    create() instead of update_or_create())."""
    log = tmp_path / "worker.log"
    task_id = str(uuid.uuid4())
    with celery_process("worker", log, "--concurrency", "1", *NO_RELAY):
        for _ in range(2):
            app.send_task(HEARTBEAT, args=["twice"], task_id=task_id)
        wait_until(lambda: len(_task_outcomes(log.read_text(), task_id)) == 2, timeout=30,
                   message="both runs of the message to finish")

    assert _task_outcomes(log.read_text(), task_id) == ["succeeded", "succeeded"]
    assert Heartbeat.objects.filter(name="twice").count() == 1


def _relay_then(condition):
    """A wait_until condition that first relays what is due (the test process is the relay here)."""

    def check():
        relay_drain()
        return condition()

    return check


def test_an_application_error_retries_through_outbox_rows_then_dead_letters(tmp_path, broker_redis):
    """Issue 15 §2: a real worker turns each failure into a delayed retry row (attempt in the context),
    and the third into a dead row with the error; Celery never retries or counts down by itself."""
    log = tmp_path / "worker.log"
    with celery_process("worker", log, "--concurrency", "1", *NO_RELAY, *POLICY_TASKS, OUTBOX_BACKOFF_BASE_MS="20"):
        with transaction.atomic():
            first = enqueue(policy_tasks.ALWAYS_FAILS, args=["real"], key="policy:1")
        wait_until(_relay_then(lambda: OutboxMessage.objects.filter(status="dead").exists()), timeout=60,
                   message="the task to be dead-lettered after its attempts")

    rows = list(OutboxMessage.objects.filter(name=policy_tasks.ALWAYS_FAILS).order_by("id"))
    assert [row.status for row in rows] == ["published", "published", "published", "dead"]
    assert [row.context.get("attempt") for row in rows] == [None, 2, 3, None]
    assert {row.key for row in rows} == {"policy:1"} and {row.payload for row in rows} == {first.payload}
    assert all(row.available_at > row.created_at for row in rows[1:3]), "retries wait in the database"
    dead = rows[-1]
    assert (dead.attempts, dead.last_error) == (3, "ValueError: injected failure for real")
    assert dead.context == {"origin": str(first.message_id)}
    text = log.read_text()
    assert text.count("failed on attempt") == 2 and "failed on its last attempt (3 of 3)" in text
    assert " retry: " not in text, "no Celery autoretry"


def test_a_task_whose_database_connection_is_cut_is_retried_not_acked_away(tmp_path, broker_redis):
    """Issue 15 §2: a real OperationalError in a running task (its backend terminated) no longer acks the
    message away: the database answers again, so the policy writes a retry row, and the retry runs."""
    log = tmp_path / "worker.log"
    with celery_process("worker", log, "--concurrency", "1", *NO_RELAY, *POLICY_TASKS, OUTBOX_BACKOFF_BASE_MS="20"):
        app.send_task(policy_tasks.BLOCKS_FIRST, args=["cut"])
        pid = wait_until(lambda: backend_running("pg_sleep"), timeout=30, message="the task to wait in the database")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until(_relay_then(lambda: Heartbeat.objects.filter(name="cut").exists()), timeout=60,
                   message="the retry to run")

    [retry] = OutboxMessage.objects.filter(name=policy_tasks.BLOCKS_FIRST)
    assert retry.context["attempt"] == 2 and retry.status == "published"
    assert retry.last_error.startswith("OperationalError")


def _checkouts(order):
    """The checkout sagas the order's order.placed started (its subscriber's one effect)."""
    return SagaInstance.objects.filter(name="orders.checkout", key=str(order.pk))


def _envelope_of(order) -> dict:
    row = OutboxMessage.objects.get(kind=OutboxMessage.Kind.EVENT, key=f"order:{order.pk}")
    return json.loads(event_envelope(ClaimedRow(
        id=row.id, message_id=str(row.message_id), kind=row.kind, name=row.name, key=row.key, queue=row.queue,
        payload=row.payload, encrypted=row.encrypted, headers_json=json.dumps(row.headers), created_at=row.created_at,
    )))


def test_a_database_outage_during_a_delivery_requeues_it_instead_of_losing_it(tmp_path, broker_redis, user):
    """Issue 15 §2, the reported loss: the database goes away while event_deliver runs, so the inbox claim
    fails and no retry row can be written. The message goes back to the broker (with a wait, not a hot
    loop) until the database is back, then the subscriber runs once."""
    order = order_place(owner=user, sku="BOOK-1", quantity=1)
    event = _envelope_of(order)
    task_id = str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{event['id']}:orders.start_checkout"))
    db = settings.DATABASES["default"]
    proxy = PostgresProxy(db["HOST"], int(db["PORT"] or 5432))
    log = tmp_path / "worker.log"
    try:
        through_proxy = f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{connection.settings_dict['NAME']}"
        with celery_process("worker", log, "--concurrency", "1", *NO_RELAY, TEST_DATABASE_URL=through_proxy,
                            TASK_REQUEUE_DELAY_MAX_SECONDS="1"):
            proxy.cut()
            app.send_task(OUTBOX_DELIVER_EVENT, args=["orders.start_checkout", event], task_id=task_id)
            wait_until(lambda: log.read_text().count("back to the broker") >= 3, timeout=60,
                       message="the delivery to be handed back to the broker, again and again")
            assert not _checkouts(order).exists()
            proxy.restore()
            wait_until(lambda: _checkouts(order).exists(), timeout=60,
                       message="the delivery to run once the database is back")
    finally:
        proxy.close()

    assert _checkouts(order).count() == 1
    assert InboxEntry.objects.filter(consumer="orders.start_checkout", message_id=event["id"]).count() == 1
    assert not OutboxMessage.objects.filter(name=OUTBOX_DELIVER_EVENT).exists(), "redelivered, not retried by a row"
    assert _task_outcomes(log.read_text(), task_id)[-1] == "succeeded"
    assert set(_task_outcomes(log.read_text(), task_id)[:-1]) == {"requeued"}


def test_an_effect_once_message_run_by_two_worker_processes_at_once_has_one_effect(tmp_path, broker_redis, effects):
    """Issue 15 §2 (effect_once), raced on a real worker: the same message delivered twice runs in two
    pool processes at once; the second waits on the first's inbox row and then does nothing."""
    log = tmp_path / "worker.log"
    task_id = str(uuid.uuid4())
    with celery_process("worker", log, "--concurrency", "2", *NO_RELAY, *POLICY_TASKS):
        gate = GateLock()
        try:
            for _ in range(2):
                app.send_task(policy_tasks.EFFECT_ONCE, args=["twice"], task_id=task_id)
            wait_until(lambda: backends_waiting_on_locks() >= 2, timeout=30,
                       message="one run inside its body, the other behind its inbox row")
        finally:
            gate.release()
        wait_until(lambda: len(_task_outcomes(log.read_text(), task_id)) == 2, timeout=30,
                   message="both runs to finish")

    assert _task_outcomes(log.read_text(), task_id) == ["succeeded", "succeeded"]
    returned = sorted(json.loads(line)["data"]["return_value"] for line in log.read_text().splitlines()
                      if line.startswith("{") and f"[{task_id}] succeeded" in line)
    assert returned == ["'duplicate'", "'effect'"]
    assert effects() == 1
