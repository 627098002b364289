"""Saga admin: the list and its filters, the detail timeline, and cancel/retry/resolve (audited, operators only)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.core.groups import OPERATORS, VIEWERS
from apps.core.models import OperatorAction
from apps.sagas.models import SagaInstance
from tests.apps.sagas.control_support import (
    NAME,
    State,
    attempt_row,
    failed_compensation_saga,
    instance_row,
    running_saga,
)
from tests.authz import staff_member

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:sagas_sagainstance_changelist")


def change_url(saga: SagaInstance) -> str:
    return reverse("admin:sagas_sagainstance_change", args=[saga.pk])


def admin_client(group: str) -> Client:
    client = Client()
    client.force_login(staff_member(group.rstrip("s"), group=group))
    return client


@pytest.fixture
def operator() -> Client:
    return admin_client(OPERATORS)


@pytest.fixture
def viewer() -> Client:
    return admin_client(VIEWERS)


def listed(response) -> set:
    assert response.status_code == 200, response.content[:2000]
    return {saga.pk for saga in response.context["cl"].result_list}


def _audit(saga) -> list[tuple[str, str, str]]:
    return list(OperatorAction.objects.filter(target_id=str(saga.pk)).values_list("action", "via", "reason"))


def test_the_list_filters_by_saga_state_key_and_age(viewer):
    old = instance_row(key="order-1", state=State.COMPLETED)
    SagaInstance.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=3))
    failed = failed_compensation_saga(key="order-2")
    other = instance_row(key="order-1", name="tests.control.other")

    assert listed(viewer.get(CHANGELIST)) == {old.pk, failed.pk, other.pk}
    assert listed(viewer.get(CHANGELIST, {"name": NAME})) == {old.pk, failed.pk}
    assert listed(viewer.get(CHANGELIST, {"state__exact": "compensation_failed"})) == {failed.pk}
    assert listed(viewer.get(CHANGELIST, {"q": "order-1"})) == {old.pk, other.pk}
    assert listed(viewer.get(CHANGELIST, {"q": str(failed.pk)})) == {failed.pk}
    assert listed(viewer.get(CHANGELIST, {"q": "order"})) == set()  # exact keys only: an index, not a scan
    assert listed(viewer.get(CHANGELIST, {"older_than": "1h"})) == {old.pk}
    assert listed(viewer.get(CHANGELIST, {"older_than": "1d"})) == set()
    page = viewer.get(CHANGELIST).content.decode()
    assert NAME in page  # the declared saga is offered in the saga filter


def test_the_detail_renders_the_timeline_in_order_with_keys_results_and_errors(viewer):
    saga = failed_compensation_saga()

    page = viewer.get(change_url(saga))

    assert page.status_code == 200
    rows = page.context["saga_timeline"]
    assert [(row.attempt.step, row.attempt.kind, row.attempt.attempt, row.attempt.state) for row in rows] == [
        ("reserve", "action", 1, "succeeded"), ("charge", "action", 1, "failed"),
        ("reserve", "compensation", 1, "failed"), ("reserve", "compensation", 2, "failed"),
    ]
    html = page.content.decode()
    assert html.index("PaymentDeclined: card declined") < html.index("stock service unreachable (1)") \
        < html.index("stock service unreachable (2)")
    assert "{&quot;reservation_id&quot;: 41}" in html  # the step's result
    assert f"{saga.pk}:0:compensation" in html  # the idempotency key used
    assert "120 ms" in html  # the duration
    assert 'id="saga-definition-current"' in html
    assert 'name="_save"' not in html  # read-only


def test_the_detail_shows_a_definition_mismatch(viewer):
    changed = instance_row(steps=("reserve", "charge", "ship"), definition_hash="0" * 64)
    gone = instance_row(name="tests.control.removed", steps=("a",), definition_hash="1" * 64)

    changed_page = viewer.get(change_url(changed)).content.decode()
    gone_page = viewer.get(change_url(gone)).content.decode()

    assert 'id="saga-definition-mismatch"' in changed_page
    assert "Steps the code no longer has: ship." in changed_page
    assert "no longer declares a saga named tests.control.removed" in gone_page
    assert 'id="saga-timeline-empty"' in gone_page


def test_viewers_get_no_actions_and_a_posted_action_changes_nothing(viewer, operator):
    failed = failed_compensation_saga()

    form = viewer.get(CHANGELIST).context.get("action_form")
    assert form is None or {value for value, _ in form.fields["action"].choices if value} == set()
    assert 'id="saga-actions"' not in viewer.get(change_url(failed)).content.decode()
    for action, data in (("retry", {"reason": "r"}), ("resolve", {"note": "fixed"}), ("cancel", {})):
        viewer.post(CHANGELIST, {"action": action, "_selected_action": [failed.pk], "confirm": "yes", **data})

    assert SagaInstance.objects.get(pk=failed.pk).state == State.COMPENSATION_FAILED
    assert _audit(failed) == []
    actions = operator.get(CHANGELIST).context["action_form"].fields["action"].choices
    assert {"cancel", "retry", "resolve"} <= {value for value, _ in actions}


def test_the_detail_offers_the_actions_that_apply_to_the_state(operator):
    failed = failed_compensation_saga()
    running = running_saga()

    failed_page = operator.get(change_url(failed)).content.decode()
    running_page = operator.get(change_url(running)).content.decode()

    assert 'id="saga-action-retry"' in failed_page and 'id="saga-action-resolve"' in failed_page
    assert 'id="saga-action-cancel"' not in failed_page
    assert 'id="saga-action-cancel"' in running_page and 'id="saga-action-retry"' not in running_page


def test_resolve_without_a_note_asks_for_one_and_changes_nothing(operator):
    failed = failed_compensation_saga()

    for note in (None, "", "   "):
        data = {"action": "resolve", "_selected_action": [failed.pk], "confirm": "yes", "from_detail": "1"}
        response = operator.post(CHANGELIST, data if note is None else {**data, "note": note})
        assert response.status_code == 200  # the form again, with its error
        assert response.context["form"].errors["note"]

    assert SagaInstance.objects.get(pk=failed.pk).state == State.COMPENSATION_FAILED
    assert _audit(failed) == []


def test_resolve_with_a_note_from_the_detail_page_marks_it_compensated(operator):
    failed = failed_compensation_saga()

    response = operator.post(CHANGELIST, {"action": "resolve", "_selected_action": [failed.pk], "confirm": "yes",
                                          "from_detail": "1", "note": "released the stock by hand"})

    assert response.status_code == 302
    assert response["Location"] == change_url(failed)
    failed.refresh_from_db()
    assert (failed.state, failed.resolution_note) == (State.COMPENSATED, "released the stock by hand")
    assert _audit(failed) == [("saga.resolve", "admin", "released the stock by hand")]


def test_a_changelist_action_asks_for_the_reason_first_then_acts(operator):
    failed = failed_compensation_saga()

    ask = operator.post(CHANGELIST, {"action": "retry", "_selected_action": [failed.pk]})

    assert ask.status_code == 200
    assert 'id="saga-action-summary"' in ask.content.decode()
    assert SagaInstance.objects.get(pk=failed.pk).state == State.COMPENSATION_FAILED

    done = operator.post(CHANGELIST, {"action": "retry", "_selected_action": [failed.pk], "confirm": "yes",
                                      "reason": "stock service is back"}, follow=True)

    assert SagaInstance.objects.get(pk=failed.pk).state == State.COMPENSATING
    assert _audit(failed) == [("saga.retry", "admin", "stock service is back")]
    assert "Retried 1 saga(s)." in [str(message) for message in done.context["messages"]]


def test_cancel_acts_on_the_running_and_names_each_refused_saga(operator):
    running = running_saga()
    finished = instance_row(state=State.COMPLETED, finished_at=timezone.now())

    done = operator.post(CHANGELIST, {"action": "cancel", "_selected_action": [running.pk, finished.pk],
                                      "confirm": "yes", "reason": "customer called"}, follow=True)

    texts = [str(message) for message in done.context["messages"]]
    assert "Cancelled 1 saga(s)." in texts
    assert any(text.startswith(f"Not cancelled: {finished.pk}:") for text in texts)
    running.refresh_from_db()
    assert running.cancel_requested or running.state in (State.COMPENSATING, State.CANCELLED)
    assert SagaInstance.objects.get(pk=finished.pk).state == State.COMPLETED
    assert _audit(running) == [("saga.cancel", "admin", "customer called")]
    assert _audit(finished) == []


def test_attempt_and_signal_pages_are_read_only(operator):
    saga = failed_compensation_saga()
    attempt = attempt_row(saga, step="confirm", state="scheduled", ran_ms=None)

    assert operator.get(reverse("admin:sagas_sagastepattempt_changelist"), {"q": str(saga.pk)}).status_code == 200
    page = operator.get(reverse("admin:sagas_sagastepattempt_change", args=[attempt.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert operator.get(reverse("admin:sagas_sagasignal_changelist")).status_code == 200


def test_an_action_on_more_sagas_than_one_request_should_handle_does_nothing(operator, monkeypatch):
    from apps.sagas import admin as saga_admin

    monkeypatch.setattr(saga_admin, "MAX_SELECTED", 1)
    first, second = failed_compensation_saga(), failed_compensation_saga()

    done = operator.post(CHANGELIST, {"action": "retry", "_selected_action": [first.pk, second.pk],
                                      "confirm": "yes", "reason": ""}, follow=True)

    assert "Select at most 1 sagas per action; nothing was done." in [str(m) for m in done.context["messages"]]
    assert set(SagaInstance.objects.values_list("state", flat=True)) == {State.COMPENSATION_FAILED}
    assert _audit(first) == _audit(second) == []
