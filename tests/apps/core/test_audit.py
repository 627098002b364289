"""The operator audit log: every operator action, from admin, the API or a command, records who, what, when,
why and on which row; admin shows it read-only.

Issue 15 §0/§11: operator actions (outbox retry, discard and re-drive, idempotency purge, API key revoke)
left no trace of who did them. Flag changes keep their own trail (flags.FlagChange) and are not repeated.
"""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from apps.core.api_keys import api_key_create
from apps.core.groups import OPERATORS, VIEWERS
from apps.core.models import ApiKey, OperatorAction
from apps.flags.models import FlagChange
from apps.flags.services import flag_save
from apps.idempotency.models import IdempotencyRecord
from apps.outbox.models import OutboxMessage
from tests.apps.outbox.support import stored
from tests.authz import idempotency_record, key_client, session_client, staff_member

pytestmark = pytest.mark.django_db

OUTBOX = reverse("admin:outbox_outboxmessage_changelist")
PUBLISHED_ORDER = json.dumps({"order_id": 1, "sku": "S", "quantity": 1, "owner_id": 1})


def entries(action: str) -> list[OperatorAction]:
    return list(OperatorAction.objects.filter(action=action).order_by("id"))


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- API ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("action", "make", "path", "body"), [
    ("outbox.retry", lambda: stored(status="dead"), "retry", {"reason": "broker was down"}),
    ("outbox.discard", lambda: stored(status="pending"), "discard", {"reason": "poison message"}),
    ("outbox.redrive", lambda: stored(status="published", payload=PUBLISHED_ORDER), "redrive",
     {"subscriber": "orders.start_checkout", "reason": "auto-reserve back on"}),
])
def test_api_actions_by_key_record_who_what_when_why_and_which_key(action, make, path, body):
    user = staff_member("ops", group=OPERATORS)
    key, raw_key = api_key_create(username="ops")
    client = key_client(user)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    message = make()

    response = client.post(f"/api/outbox/messages/{message.pk}/{path}/", body, format="json",
                           HTTP_X_REQUEST_ID="req-audit-1")

    assert 200 <= response.status_code < 300, response.content
    [entry] = entries(action)
    assert (entry.actor, entry.via, entry.credential, entry.request_id) == ("ops", "api", key.prefix, "req-audit-1")
    assert (entry.target_type, entry.target_id, entry.reason) == ("outbox.outboxmessage", str(message.pk),
                                                                  body["reason"])
    assert entry.created_at is not None
    if action == "outbox.redrive":
        assert entry.details["subscriber"] == "orders.start_checkout"
        assert OutboxMessage.objects.get(pk=entry.details["delivery_id"]).name == "outbox.deliver_event"


def test_api_actions_by_session_have_no_credential_and_the_reason_is_optional():
    message = stored(status="dead")

    response = session_client(staff_member("ops", group=OPERATORS)).post(f"/api/outbox/messages/{message.pk}/retry/")

    assert response.status_code == 200, response.content
    [entry] = entries("outbox.retry")
    assert (entry.actor, entry.via, entry.credential, entry.reason) == ("ops", "api", "", "")


def test_a_refused_or_failed_action_records_nothing():
    published = stored(status="published")
    operator = key_client(staff_member("ops", group=OPERATORS))
    viewer = key_client(staff_member("viewer", group=VIEWERS))

    assert operator.post(f"/api/outbox/messages/{published.pk}/retry/").status_code == 409
    assert viewer.post(f"/api/outbox/messages/{published.pk}/discard/").status_code == 403
    assert not OperatorAction.objects.exists()


def test_the_retry_body_is_strict():
    message = stored(status="dead")
    operator = key_client(staff_member("ops", group=OPERATORS))

    response = operator.post(f"/api/outbox/messages/{message.pk}/retry/", {"reason": "x", "force": True},
                             format="json")

    assert response.status_code == 400
    assert OutboxMessage.objects.get(pk=message.pk).status == "dead"


# --- admin -------------------------------------------------------------------------------------------------------

def test_admin_retry_and_discard_record_only_the_rows_they_changed():
    client = admin_client(staff_member("ops", group=OPERATORS))
    dead, published, pending = stored(status="dead"), stored(status="published"), stored(status="pending")

    client.post(OUTBOX, {"action": "retry", "_selected_action": [dead.pk, published.pk]})
    client.post(OUTBOX, {"action": "discard", "confirm": "yes", "reason": "duplicate import",
                         "_selected_action": [pending.pk, published.pk]})

    [retry] = entries("outbox.retry")
    assert (retry.actor, retry.via, retry.target_id, retry.reason) == ("ops", "admin", str(dead.pk), "")
    [discard] = entries("outbox.discard")
    assert (discard.target_id, discard.reason) == (str(pending.pk), "duplicate import")


def test_admin_idempotency_purge_needs_the_delete_permission_and_is_recorded():
    staff = staff_member("viewer-only")
    staff.user_permissions.add(Permission.objects.get(codename="view_idempotencyrecord"))
    record = idempotency_record(staff)
    url = reverse("admin:idempotency_idempotencyrecord_changelist")

    admin_client(staff).post(url, {"action": "purge", "_selected_action": [record.pk]})
    assert IdempotencyRecord.objects.filter(pk=record.pk).exists()  # view alone does not purge

    staff.user_permissions.add(Permission.objects.get(codename="delete_idempotencyrecord"))
    page = admin_client(staff).get(url)
    assert "purge" in dict(page.context["action_form"].fields["action"].choices)
    assert "delete_selected" not in dict(page.context["action_form"].fields["action"].choices)  # unaudited
    admin_client(staff).post(url, {"action": "purge", "_selected_action": [record.pk]})

    assert not IdempotencyRecord.objects.filter(pk=record.pk).exists()
    [entry] = entries("idempotency.purge")
    assert (entry.actor, entry.via, entry.target_type, entry.target_id) == (
        "viewer-only", "admin", "idempotency.idempotencyrecord", str(record.pk))


def test_admin_api_key_revoke_needs_the_change_permission_and_is_recorded():
    staff = staff_member("keys")
    staff.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    key = api_key_create(username="keys")[0]
    url = reverse("admin:core_apikey_changelist")

    admin_client(staff).post(url, {"action": "revoke", "_selected_action": [key.pk]})
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None

    staff.user_permissions.add(Permission.objects.get(codename="change_apikey"))
    admin_client(staff).post(url, {"action": "revoke", "_selected_action": [key.pk]})

    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    [entry] = entries("api_key.revoke")
    assert (entry.actor, entry.via, entry.target_type, entry.target_id) == ("keys", "admin", "core.apikey", str(key.pk))


# --- commands ----------------------------------------------------------------------------------------------------

def test_commands_record_the_operating_system_account(monkeypatch):
    monkeypatch.setenv("USER", "deployer")
    monkeypatch.delenv("LOGNAME", raising=False)
    dead = stored(status="dead")
    key = api_key_create(username=staff_member("owner").username)[0]

    call_command("outbox_retry", str(dead.pk), "--reason", "after the outage", stdout=io.StringIO())
    call_command("revoke_api_key", key.prefix, "--reason", "laptop lost", stdout=io.StringIO())

    [retry] = entries("outbox.retry")
    assert (retry.actor, retry.via, retry.target_id, retry.reason) == ("cli:deployer", "cli", str(dead.pk),
                                                                       "after the outage")
    [revoke] = entries("api_key.revoke")
    assert (revoke.actor, revoke.target_id, revoke.reason) == ("cli:deployer", str(key.pk), "laptop lost")


# --- the log in admin ----------------------------------------------------------------------------------------------

def test_the_audit_log_is_read_only_in_admin_even_for_superusers(django_user_model):
    stored_entry = OperatorAction.objects.create(actor="ops", via="api", action="outbox.retry",
                                                 target_type="outbox.outboxmessage", target_id="1")
    root = admin_client(django_user_model.objects.create_superuser(username="root", password="x"))
    viewer = admin_client(staff_member("viewer", group=VIEWERS))
    change = reverse("admin:core_operatoraction_change", args=[stored_entry.pk])

    assert viewer.get(reverse("admin:core_operatoraction_changelist")).status_code == 200
    assert b"outbox.retry" in viewer.get(change).content
    for client in (root, viewer):
        assert client.get(reverse("admin:core_operatoraction_add")).status_code == 403
        assert b'name="_save"' not in client.get(change).content
        assert client.post(reverse("admin:core_operatoraction_delete", args=[stored_entry.pk]),
                           {"post": "yes"}).status_code == 403
    assert OperatorAction.objects.filter(pk=stored_entry.pk).exists()


def test_flag_changes_stay_in_their_own_trail():
    flag_save(definition={"key": "beta", "enabled": True, "rules": []}, actor="ops", reason="launch")

    assert FlagChange.objects.filter(flag_key="beta").exists()
    assert not OperatorAction.objects.exists()
