"""The operators and viewers groups: made by migrate, kept up to date by every migrate, honoured by admin.

Issue 15 §11: there were no groups, so granting an operator "what operators may do" meant picking
permissions by hand. A data migration and a post_migrate hook now give ``viewers`` view on every Taskplane
model and ``operators`` view plus the acting permissions (apps/core/groups.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import psycopg
import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection
from django.test import Client
from django.urls import reverse

from apps.core.api_keys import api_key_create
from apps.core.groups import OPERATORS, VIEWERS
from apps.core.models import ApiKey
from apps.idempotency.models import IdempotencyRecord
from apps.outbox.models import OutboxMessage
from tests.apps.outbox.support import stored
from tests.authz import idempotency_record, staff_member
from tests.processes import ROOT, process_env

TASKPLANE_MODELS = sorted(
    f"{model._meta.app_label}.{model._meta.model_name}"
    for config in apps.get_app_configs() if config.name.startswith("apps.") for model in config.get_models()
)
# What operators may do beyond viewing, model by model: the policy, written out independently of the code.
OPERATOR_ACTS = {
    "core.apikey": {"change"},  # revoke; never add (a key can be minted for any user) or delete
    "core.heartbeat": set(),
    "core.operatoraction": set(),  # the audit log is written by services only
    "flags.flag": {"add", "change", "delete"},
    "flags.flagchange": set(),
    "flags.flagrule": {"change"},
    "flags.flagsversion": set(),
    "flags.scheduledflagchange": {"add", "change", "delete"},
    "idempotency.idempotencyrecord": {"change", "delete"},  # purge deletes
    "orders.order": {"change"},
    "orders.product": {"change"},  # price and stock; new products come from `manage.py catalog set`
    "orders.reservation": set(),  # written by the checkout saga
    "orders.payment": set(),
    "orders.sandboxcharge": set(),  # the sandbox provider's own rows
    "orders.sandboxrefund": set(),
    "outbox.inboxentry": set(),
    "outbox.outboxmessage": {"change"},  # retry, discard, re-drive
    "outbox.relaystatus": set(),  # written by the relays only
    # Schedules: operators create, edit, pause, trigger and delete; fire rows are the firing loop's.
    "schedules.schedule": {"add", "change", "delete"},
    "schedules.schedulefire": set(),
    "sagas.sagainstance": {"change"},  # cancel, retry compensation, mark resolved
    "sagas.sagasignal": set(),  # the saga history is written by the engine only
    "sagas.sagastepattempt": set(),
    "emails.email": {"change"},  # retry failed emails
    # Webhooks: enable/disable, test, recover (endpoint) and replay (delivery); owners create and delete.
    "notifications.endpoint": {"change"},
    "notifications.delivery": {"change"},
    "notifications.message": set(),  # the delivery log is written by the fan-out and workers only
    "notifications.attempt": set(),
}


def expected(group: str) -> set[str]:
    names = set()
    for label in TASKPLANE_MODELS:
        app_label, model = label.split(".")
        acts = {"view"} | (OPERATOR_ACTS.get(label, {"change"}) if group == OPERATORS else set())
        names |= {f"{app_label}.{act}_{model}" for act in acts}
    return names


def test_the_policy_table_of_this_test_names_every_model():
    assert set(OPERATOR_ACTS) == set(TASKPLANE_MODELS)


def _fresh_database_url(name: str) -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{name}"


def _admin_connection():
    db = settings.DATABASES["default"]
    return psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"],
                           password=db["PASSWORD"] or None, dbname="postgres", autocommit=True)


@pytest.mark.django_db
def test_a_fresh_migrate_gives_both_groups_the_policy(tmp_path):
    """`manage.py migrate` on an empty database: the data migration makes the groups, post_migrate fills them."""
    name = f"{connection.settings_dict['NAME']}_fresh_groups"
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, capture_output=True,
            text=True, timeout=300, env={**process_env(), "TEST_DATABASE_URL": _fresh_database_url(name)},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        granted: dict[str, set[str]] = defaultdict(set)
        with psycopg.connect(_fresh_database_url(name)) as fresh:
            rows = fresh.execute(
                "SELECT g.name, ct.app_label || '.' || p.codename FROM auth_group g "
                "JOIN auth_group_permissions gp ON gp.group_id = g.id "
                "JOIN auth_permission p ON p.id = gp.permission_id "
                "JOIN django_content_type ct ON ct.id = p.content_type_id"
            ).fetchall()
            groups = {row[0] for row in fresh.execute("SELECT name FROM auth_group")}
        for group, permission in rows:
            granted[group].add(permission)
    finally:
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    assert groups == {OPERATORS, VIEWERS}
    assert granted[VIEWERS] == expected(VIEWERS)
    assert granted[OPERATORS] == expected(OPERATORS)


def _granted(group: str) -> set[str]:
    return {f"{app_label}.{codename}" for app_label, codename in
            Group.objects.get(name=group).permissions.values_list("content_type__app_label", "codename")}


@pytest.mark.django_db
def test_models_whose_permissions_appear_later_join_the_groups_at_the_next_migrate():
    """A model added later gets its permissions at the migrate that creates it; the hook grants them then."""
    # Simulate a model that is new to the database: its permissions do not exist yet.
    Permission.objects.filter(content_type__app_label="outbox").delete()
    assert "outbox.view_outboxmessage" not in _granted(VIEWERS)

    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")  # what the end of `migrate` sends

    assert _granted(VIEWERS) == expected(VIEWERS)
    assert _granted(OPERATORS) == expected(OPERATORS)


@pytest.mark.django_db
def test_the_policy_only_adds_what_an_administrator_granted_stays():
    extra = Permission.objects.get(content_type__app_label="auth", codename="view_user")
    Group.objects.get(name=VIEWERS).permissions.add(extra)

    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")

    assert _granted(VIEWERS) == expected(VIEWERS) | {"auth.view_user"}


# --- a viewer in admin sees but cannot act ---------------------------------------------------------------------

def _admin_client(group: str) -> Client:
    client = Client()
    client.force_login(staff_member(group.rstrip("s"), group=group))
    return client


def _actions(page) -> set[str]:
    assert page.status_code == 200, page.content[:2000]
    form = page.context["action_form"] if "action_form" in page.context else None
    return {value for value, _ in form.fields["action"].choices if value} if form else set()


ACTING_PAGES = {
    "admin:outbox_outboxmessage_changelist": {"retry", "discard", "redrive"},
    "admin:idempotency_idempotencyrecord_changelist": {"purge"},
    "admin:core_apikey_changelist": {"revoke"},
    "admin:sagas_sagainstance_changelist": {"cancel", "retry", "resolve"},
    "admin:emails_email_changelist": {"retry_failed"},
}


@pytest.mark.django_db
@pytest.mark.parametrize("url_name", ACTING_PAGES)
def test_viewers_see_admin_pages_without_their_actions_and_operators_get_them(url_name):
    assert _actions(_admin_client(VIEWERS).get(reverse(url_name))) == set()
    assert _actions(_admin_client(OPERATORS).get(reverse(url_name))) >= ACTING_PAGES[url_name]


@pytest.mark.django_db
def test_a_viewer_posting_an_action_changes_nothing():
    viewer = Client()
    user = staff_member("viewer", group=VIEWERS)
    viewer.force_login(user)
    dead = stored(status="dead")
    published = stored(status="published")
    key, record = api_key_create(username=user.get_username())[0], idempotency_record(user)

    outbox = "admin:outbox_outboxmessage_changelist"
    posts = [
        (outbox, {"action": "retry", "_selected_action": [dead.pk]}),
        (outbox, {"action": "discard", "confirm": "yes", "_selected_action": [dead.pk]}),
        (outbox, {"action": "redrive", "confirm": "yes", "subscriber": "orders.start_checkout", "reason": "r",
                  "_selected_action": [published.pk]}),
        ("admin:idempotency_idempotencyrecord_changelist", {"action": "purge", "_selected_action": [record.pk]}),
        ("admin:core_apikey_changelist", {"action": "revoke", "_selected_action": [key.pk]}),
    ]
    for url_name, data in posts:
        viewer.post(reverse(url_name), data)

    assert OutboxMessage.objects.get(pk=dead.pk).status == "dead"
    assert OutboxMessage.objects.count() == 2  # no re-drive delivery written
    assert IdempotencyRecord.objects.filter(pk=record.pk).exists()
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


@pytest.mark.django_db
def test_a_viewer_reads_a_flag_but_gets_no_save_button():
    from apps.flags.services import flag_save

    flag = flag_save(definition={"key": "beta", "enabled": True, "rules": []}, actor="setup", reason="fixture")
    page = _admin_client(VIEWERS).get(reverse("admin:flags_flag_change", args=[flag.pk]))

    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert b'name="_save"' in _admin_client(OPERATORS).get(reverse("admin:flags_flag_change", args=[flag.pk])).content
