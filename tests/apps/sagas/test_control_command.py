"""`manage.py saga list|show|cancel|retry|resolve`: filters, the timeline, audited actions, clear refusals."""

from __future__ import annotations

import subprocess
import sys
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.core.audit import Actor
from apps.core.models import OperatorAction
from apps.sagas.models import SagaInstance
from tests.apps.sagas.control_support import NAME, State, failed_compensation_saga, instance_row, running_saga
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db


def saga(*args: str) -> str:
    out = StringIO()
    call_command("saga", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _audit(instance) -> list[tuple[str, str, str, str]]:
    return list(OperatorAction.objects.filter(target_id=str(instance.pk))
                .values_list("action", "actor", "via", "reason"))


def test_list_filters_by_name_state_and_key():
    failed = failed_compensation_saga(key="order-2")
    running = instance_row(key="order-1")
    other = instance_row(key="order-1", name="tests.control.other")

    everything = saga("list")
    assert all(str(instance.pk) in everything for instance in (failed, running, other))
    assert everything.rstrip().endswith("3 saga(s).")
    only_failed = saga("list", "--state", "compensation_failed")
    assert str(failed.pk) in only_failed and str(running.pk) not in only_failed
    by_key = saga("list", "--key", "order-1", "--name", NAME)
    assert str(running.pk) in by_key and str(other.pk) not in by_key and str(failed.pk) not in by_key
    assert saga("list", "--created-before", "2000-01-01T00:00Z").strip() == "0 saga(s)."
    assert "(limit reached)" in saga("list", "--limit", "2")


def test_show_prints_the_timeline_in_order_with_keys_and_errors():
    failed = failed_compensation_saga()

    out = saga("show", str(failed.pk))

    assert "state: compensation_failed" in out and "definition: current" in out
    lines = out[out.index("timeline:"):].splitlines()[1:]
    steps = [line.split("] ", 1)[1].split("  start")[0] for line in lines if line.startswith("  [")]
    assert steps == ["reserve action #1 succeeded", "charge action #1 failed", "reserve compensation #1 failed",
                     "reserve compensation #2 failed"]
    assert f"key {failed.pk}:0:compensation" in out
    assert "error: PaymentDeclined: card declined" in out
    assert 'result: {"reservation_id": 41}' in out


def test_show_names_a_changed_definition():
    changed = instance_row(steps=("reserve", "charge", "ship"), definition_hash="0" * 64)

    assert "steps the code no longer has: ship" in saga("show", str(changed.pk))


def test_actions_go_through_the_services_and_are_audited_as_the_command_line_user():
    failed = failed_compensation_saga()
    running = running_saga()
    who = Actor.command_line().name

    assert "is now compensating" in saga("retry", str(failed.pk), "--reason", "stock service is back")
    saga("cancel", str(running.pk), "--reason", "customer called")

    assert _audit(failed) == [("saga.retry", who, "cli", "stock service is back")]
    assert _audit(running) == [("saga.cancel", who, "cli", "customer called")]
    running.refresh_from_db()
    assert running.cancel_requested or running.state in (State.COMPENSATING, State.CANCELLED)


def test_resolve_needs_a_note():
    failed = failed_compensation_saga()

    with pytest.raises(CommandError, match="--note"):
        saga("resolve", str(failed.pk))
    with pytest.raises(CommandError, match="blank"):
        saga("resolve", str(failed.pk), "--note", "  ")
    assert SagaInstance.objects.get(pk=failed.pk).state == State.COMPENSATION_FAILED

    assert "is now compensated" in saga("resolve", str(failed.pk), "--note", "released the stock by hand")
    assert SagaInstance.objects.get(pk=failed.pk).resolution_note == "released the stock by hand"


def test_a_refused_transition_or_a_missing_id_is_a_clear_error():
    finished = instance_row(state=State.COMPLETED, finished_at=timezone.now())

    with pytest.raises(CommandError) as refused:
        saga("cancel", str(finished.pk))
    with pytest.raises(CommandError) as missing:
        saga("show", str(uuid.uuid4()))
    with pytest.raises(CommandError, match="not a saga id"):
        saga("show", "42")

    assert "completed" in str(refused.value)
    assert str(missing.value)
    assert _audit(finished) == []


@pytest.mark.django_db(transaction=True)
def test_the_process_exits_non_zero_with_the_message_on_stderr():
    finished = instance_row(state=State.COMPLETED, finished_at=timezone.now())

    result = subprocess.run([sys.executable, "manage.py", "saga", "retry", str(finished.pk)], cwd=ROOT,
                            env=process_env(), capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("CommandError: "), result.stderr
    assert "Traceback" not in result.stderr
