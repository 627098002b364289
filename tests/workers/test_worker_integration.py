"""Real `celery worker` and `celery beat` processes against the real brokers and the test database."""

import json

import pytest
from django.conf import settings

from apps.core.models import Heartbeat
from apps.core.task_contract import HEARTBEAT, QUEUES
from tests.helpers import wait_until
from tests.processes import celery_process
from workers import app

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


def test_tasks_are_idempotent_when_run_twice(tmp_path, broker_redis):
    with celery_process("worker", tmp_path / "worker.log", "--concurrency", TASK_PROCESSES):
        for _ in range(2):
            app.send_task(HEARTBEAT, args=["twice"])
        wait_until(lambda: Heartbeat.objects.filter(name="twice").exists(), timeout=30)

    assert Heartbeat.objects.filter(name="twice").count() == 1
