"""The Celery app's safety settings, and the one task decorator's defaults."""

import pytest

from apps.core.task_contract import QUEUES, TASK_QUEUES
from workers import app
from workers.task import taskplane_task


def test_json_only_late_ack_and_prefetch_one():
    conf = app.conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_retry_on_startup


def test_visibility_timeout_exceeds_the_hard_time_limit():
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit
    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit


def test_every_contract_task_is_registered_on_its_queue():
    app.loader.import_default_modules()
    for name, queue in TASK_QUEUES.items():
        task = app.tasks[name]
        assert app.amqp.router.route({}, name)["queue"].name == queue and queue in QUEUES
        assert task.acks_late and task.time_limit and task.soft_time_limit


def test_every_beat_entry_expires():
    assert all("expires" in entry["options"] for entry in app.conf.beat_schedule.values())


def test_decorator_refuses_a_task_missing_from_the_contract():
    with pytest.raises(ValueError, match="not listed"):
        taskplane_task("nobody.knows.me")(lambda: None)


def test_failed_tasks_are_never_acknowledged_away():
    """Issue 15 §2: acks_late alone acknowledged a task that raised; every task now runs under the
    failure policy, and one killed by its hard time limit is requeued, not acknowledged."""
    from workers.task import TaskplaneTask

    app.loader.import_default_modules()
    assert app.conf.task_acks_on_failure_or_timeout is False
    for name in TASK_QUEUES:
        task = app.tasks[name]
        assert isinstance(task, TaskplaneTask) and task.acks_on_failure_or_timeout is False, name
        assert task.max_attempts >= 1
