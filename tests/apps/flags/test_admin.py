"""Flags admin: saves go through flag_save with a reason, field errors on the form, history with rollback,
explain, deletes with a reason, scheduled changes and the read-only audit trail."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.flags.models import Flag, FlagChange, FlagRule, ScheduledFlagChange
from apps.flags.services import flag_save, scheduled_changes_apply
from tests.apps.flags.test_definitions import INVALID_DEFINITIONS, invalid

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:flags_flag_add")




@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="x")


@pytest.fixture
def admin_client(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


def url(name: str, flag: Flag) -> str:
    return reverse(f"admin:flags_flag_{name}", args=[flag.pk])


def stored(key: str = "beta", **fields) -> Flag:
    return flag_save(definition={"key": key, "enabled": True, "rules": [], **fields}, actor="setup", reason="fixture")


def as_text(value) -> str:
    return json.dumps(value)


def form_data(definition: dict, *, reason: str | None = "because", existing: Flag | None = None) -> dict:
    """The POST the change form sends for ``definition`` (its rules in the inline formset)."""
    data = {
        "description": definition.get("description", ""), "owner": definition.get("owner", ""),
        "kind": definition.get("kind", "boolean"),
        "variants": as_text(definition.get("variants", [])),
        "default_value": as_text(definition.get("default_value")),
        "starts_at_0": "", "starts_at_1": "", "ends_at_0": "", "ends_at_1": "",
    }
    if existing is None:
        data["key"] = definition["key"]
    if definition.get("enabled"):
        data["enabled"] = "on"
    if reason is not None:
        data["reason"] = reason
    old_rules = list(existing.rules.order_by("position")) if existing else []
    rules = definition.get("rules", [])
    data.update({"rules-TOTAL_FORMS": str(max(len(rules), len(old_rules))),
                 "rules-INITIAL_FORMS": str(len(old_rules)), "rules-MIN_NUM_FORMS": "0",
                 "rules-MAX_NUM_FORMS": "1000"})
    for index in range(max(len(rules), len(old_rules))):
        prefix = f"rules-{index}-"
        if index < len(old_rules):
            data[prefix + "id"] = str(old_rules[index].pk)
            data[prefix + "flag"] = str(existing.pk)
        if index >= len(rules):
            data[prefix + "DELETE"] = "on"
            rule = {"kind": old_rules[index].kind}
        else:
            rule = rules[index]
        data.update({prefix + "position": str(index), prefix + "kind": rule["kind"],
                     prefix + "params": as_text(rule.get("params", {})),
                     prefix + "constraints": as_text(rule.get("constraints", [])),
                     prefix + "variant": rule.get("variant", "")})
    return data


def page_errors(response) -> list[str]:
    """Every error message on a re-rendered change form: the flag's fields and each rule's."""
    assert response.status_code == 200, "expected the form again, with errors"
    messages = [str(message) for errors in response.context["adminform"].form.errors.values() for message in errors]
    for formset in response.context["inline_admin_formsets"]:
        for form in formset.formset.forms:
            messages += [str(message) for errors in form.errors.values() for message in errors]
    return messages


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors


# --- add and change ----------------------------------------------------------------------------------


def test_add_saves_through_flag_save_with_rules_and_an_audit_row(admin_client):
    definition = {"key": "new-checkout", "enabled": True, "rules": [
        {"kind": "users", "params": {"user_ids": [7]}},
        {"kind": "percentage", "params": {"percentage": 25}},
    ]}

    response = admin_client.post(ADD_URL, form_data(definition, reason="launch for staff, then 25%"))

    assert response.status_code == 302, page_errors(response)
    flag = Flag.objects.get(key="new-checkout")
    assert flag.version == 1
    assert [(rule.position, rule.kind, rule.params) for rule in flag.rules.all()] == [
        (0, "users", {"user_ids": [7]}), (1, "percentage", {"percentage": 25})]
    change = FlagChange.objects.get(flag_key="new-checkout")
    assert (change.action, change.actor, change.reason, change.before) == (
        "create", "root", "launch for staff, then 25%", None)
    assert change.after["rules"][1] == {"kind": "percentage", "params": {"percentage": 25}, "constraints": [],
                                        "variant": ""}


def test_change_replaces_the_definition_and_records_before_and_after(admin_client):
    flag = stored("beta", rules=[{"kind": "percentage", "params": {"percentage": 10}}])
    definition = {"key": "beta", "enabled": False, "description": "paused", "rules": [
        {"kind": "percentage", "params": {"percentage": 40}},
        {"kind": "groups", "params": {"groups": ["beta-testers"]}},
    ]}

    response = admin_client.post(url("change", flag), form_data(definition, reason="pause", existing=flag))

    assert response.status_code == 302, page_errors(response)
    flag.refresh_from_db()
    assert (flag.version, flag.enabled, flag.description) == (2, False, "paused")
    assert [rule.kind for rule in flag.rules.all()] == ["percentage", "groups"]
    change = FlagChange.objects.filter(flag_key="beta").first()
    assert (change.action, change.actor, change.reason) == ("update", "root", "pause")
    assert change.before["rules"][0]["params"] == {"percentage": 10}
    assert change.after["rules"][0]["params"] == {"percentage": 40}
    assert {"field": "enabled", "before": True, "after": False} in change.diff


def test_deleting_a_rule_inline_removes_it(admin_client):
    flag = stored("beta", rules=[{"kind": "users", "params": {"user_ids": [1]}},
                                 {"kind": "percentage", "params": {"percentage": 10}}])

    response = admin_client.post(url("change", flag), form_data(
        {"key": "beta", "enabled": True, "rules": [{"kind": "users", "params": {"user_ids": [1]}}]},
        existing=flag))

    assert response.status_code == 302, page_errors(response)
    assert [rule.kind for rule in Flag.objects.get(key="beta").rules.all()] == ["users"]


def test_rules_follow_their_position_field(admin_client):
    data = form_data({"key": "beta", "enabled": True, "rules": [
        {"kind": "percentage", "params": {"percentage": 5}}, {"kind": "everyone"}]})
    data["rules-0-position"], data["rules-1-position"] = "9", "1"

    assert admin_client.post(ADD_URL, data).status_code == 302

    assert [rule.kind for rule in Flag.objects.get(key="beta").rules.all()] == ["everyone", "percentage"]


def test_the_reason_is_required(admin_client):
    response = admin_client.post(ADD_URL, form_data({"key": "beta", "enabled": True}, reason=None))

    assert "reason" in form_errors(response)
    assert not Flag.objects.exists() and not FlagChange.objects.exists()


@pytest.mark.parametrize("name", INVALID_DEFINITIONS)
def test_invalid_definitions_show_field_errors_and_save_nothing(admin_client, name):
    definition, field = invalid(name)

    response = admin_client.post(ADD_URL, form_data(definition))

    if field == "variants":
        assert "variants" in form_errors(response), page_errors(response)
    else:  # a rule's error sits on the rule's row and field, naming the path inside the rule
        path = field.removeprefix("rules[0].")
        rule_errors = response.context["inline_admin_formsets"][0].formset.forms[0].errors
        column = path.split(".")[0].split("[")[0]
        assert any(message.startswith(f"{path}: ") for message in rule_errors.get(column, [])), rule_errors
    assert not Flag.objects.exists() and not FlagChange.objects.exists()


def test_an_invalid_change_leaves_the_stored_flag_untouched(admin_client):
    flag = stored("beta", rules=[{"kind": "percentage", "params": {"percentage": 10}}])
    definition = {"key": "beta", "enabled": True, "rules": [{"kind": "percentage", "params": {"percentage": 101}}]}

    response = admin_client.post(url("change", flag), form_data(definition, existing=flag))

    assert any("percentage" in message for message in page_errors(response))
    flag.refresh_from_db()
    assert flag.version == 1 and flag.rules.get().params == {"percentage": 10}
    assert FlagChange.objects.count() == 1


@pytest.mark.parametrize(("form_field", "text"), [
    ("rules-0-params", '{"user_ids": ["\\u0000"]}'),
    ("rules-0-params", '{"user_ids": [1e400]}'),
    ("default_value", '"\\u0000"'),
])
def test_json_the_database_cannot_store_is_a_field_error(admin_client, form_field, text):
    data = form_data({"key": "beta", "enabled": True, "rules": [{"kind": "users", "params": {"user_ids": [1]}}]})
    data[form_field] = text

    response = admin_client.post(ADD_URL, data)

    assert page_errors(response)
    assert not Flag.objects.exists()


def test_an_end_before_the_start_is_an_error_on_ends_at(admin_client):
    data = form_data({"key": "beta", "enabled": True})
    data.update({"starts_at_0": "2030-01-02", "starts_at_1": "09:00:00",
                 "ends_at_0": "2030-01-01", "ends_at_1": "09:00:00"})

    response = admin_client.post(ADD_URL, data)

    assert "ends_at" in form_errors(response)
    assert not Flag.objects.exists()


def test_the_key_cannot_be_renamed(admin_client):
    flag = stored("beta")
    data = form_data({"key": "beta", "enabled": False}, existing=flag)
    data["key"] = "renamed"

    assert admin_client.post(url("change", flag), data).status_code == 302

    assert list(Flag.objects.values_list("key", "enabled")) == [("beta", False)]


def test_change_form_links_history_and_explain(admin_client):
    flag = stored("beta")

    page = admin_client.get(url("change", flag)).content.decode()

    assert url("history", flag) in page and url("explain", flag) in page
    assert 'name="reason"' in page


# --- history and rollback ------------------------------------------------------------------------------


def test_history_lists_who_when_why_and_the_diff(admin_client):
    flag = stored("beta")
    flag_save(definition={"key": "beta", "enabled": False, "rules": []}, actor="alice", reason="incident 42")

    response = admin_client.get(url("history", flag))

    assert response.status_code == 200
    page = response.content.decode()
    assert "incident 42" in page and "alice" in page and "fixture" in page
    assert "<code>enabled</code>" in page
    assert [row["change"].reason for row in response.context["rows"]] == ["incident 42", "fixture"]


def test_rollback_restores_an_earlier_definition_as_a_new_audited_change(admin_client):
    flag = stored("beta", rules=[{"kind": "percentage", "params": {"percentage": 10}}])
    first = FlagChange.objects.get(flag_key="beta")
    flag_save(definition={"key": "beta", "enabled": True, "rules": [
        {"kind": "percentage", "params": {"percentage": 90}}]}, actor="alice", reason="too fast")

    response = admin_client.post(url("rollback", flag), {"change_id": first.pk, "reason": "errors rose"})

    assert response.status_code == 302 and response["Location"] == url("history", flag)
    flag.refresh_from_db()
    assert flag.version == 3 and flag.rules.get().params == {"percentage": 10}
    change = FlagChange.objects.filter(flag_key="beta").first()
    assert (change.action, change.actor, change.reason) == ("rollback", "root", "errors rose")
    assert change.before["rules"][0]["params"] == {"percentage": 90}
    assert change.after["rules"][0]["params"] == {"percentage": 10}


@pytest.mark.parametrize("post", [{"change_id": "FIRST"}, {"change_id": "FIRST", "reason": "  "},
                                  {"reason": "x"}, {"change_id": "99999999999999999999", "reason": "x"},
                                  {"change_id": "123456", "reason": "x"}])
def test_rollback_needs_a_reason_and_a_known_change(admin_client, post):
    flag = stored("beta")
    post = {**post, "change_id": str(FlagChange.objects.get().pk)} if post.get("change_id") == "FIRST" else post

    response = admin_client.post(url("rollback", flag), post, follow=True)

    assert any(message.level_tag == "error" for message in get_messages(response.wsgi_request))
    assert Flag.objects.get(key="beta").version == 1 and FlagChange.objects.count() == 1


def test_rollback_is_post_only(admin_client):
    assert admin_client.get(url("rollback", stored("beta"))).status_code == 405


def test_history_for_a_view_only_user_offers_no_rollback(django_user_model):
    viewer = django_user_model.objects.create_user(username="viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_flag"))
    client = Client()
    client.force_login(viewer)
    flag = stored("beta")
    first = FlagChange.objects.get()

    assert 'name="change_id"' not in client.get(url("history", flag)).content.decode()
    assert client.post(url("rollback", flag), {"change_id": first.pk, "reason": "x"}).status_code == 403


# --- explain ------------------------------------------------------------------------------------------


def test_explain_shows_the_matching_rule_for_a_user(admin_client, user):
    flag = stored("beta", rules=[{"kind": "constraint", "constraints": [
        {"attribute": "plan", "operator": "in", "values": ["pro"]}]},
        {"kind": "users", "params": {"user_ids": [user.pk]}}])

    response = admin_client.get(url("explain", flag), {"user": user.pk})

    assert response.status_code == 200
    result = response.context["result"]
    assert (result["details"].value, result["details"].reason, result["details"].rule_index) == (
        True, "TARGETING_MATCH", 1)
    assert "rule 1 (users) matched" in result["details"].explanation
    assert "rule 0 (constraint) did not match" in result["details"].explanation
    page = response.content.decode()
    assert "TARGETING_MATCH" in page and "rule 1 (users) matched" in page


def test_explain_with_a_json_context(admin_client):
    flag = stored("beta", rules=[{"kind": "constraint", "constraints": [
        {"attribute": "app_version", "operator": "semver_gte", "values": ["2.4.0"]}]}])

    matched = admin_client.get(url("explain", flag), {"context": '{"app_version": "2.10.1"}'}).context["result"]
    missed = admin_client.get(url("explain", flag), {"context": '{"app_version": "2.3.9"}'}).context["result"]

    assert (matched["details"].value, matched["details"].reason) == (True, "TARGETING_MATCH")
    assert (missed["details"].value, missed["details"].reason) == (False, "DEFAULT")


@pytest.mark.parametrize("query", [{"context": "[1, 2]"}, {"context": "{not json"}, {"user": "999999"},
                                   {"user": "x"}])
def test_explain_rejects_bad_input_on_the_form(admin_client, query):
    response = admin_client.get(url("explain", stored("beta")), query)

    assert response.status_code == 200
    assert response.context["form"].errors and response.context["result"] is None


# --- delete -------------------------------------------------------------------------------------------


def test_delete_needs_a_reason_and_is_audited(admin_client):
    flag = stored("beta")

    refused = admin_client.post(url("delete", flag), {"post": "yes"})
    assert refused.status_code == 302 and Flag.objects.filter(key="beta").exists()

    response = admin_client.post(url("delete", flag), {"post": "yes", "reason": "feature shipped"})

    assert response.status_code == 302
    assert not Flag.objects.filter(key="beta").exists()
    change = FlagChange.objects.filter(flag_key="beta").first()
    assert (change.action, change.actor, change.reason, change.after) == ("delete", "root", "feature shipped", None)


def test_bulk_delete_is_not_offered(admin_client):
    stored("beta")

    response = admin_client.get(reverse("admin:flags_flag_changelist"))

    assert "delete_selected" not in response.content.decode()


# --- scheduled changes --------------------------------------------------------------------------------


def scheduled_form(flag: Flag, changes, *, run_at=None, reason="ramp at nine") -> dict:
    run_at = run_at or timezone.now() + timedelta(hours=1)
    return {"flag": flag.pk, "run_at_0": run_at.strftime("%Y-%m-%d"), "run_at_1": run_at.strftime("%H:%M:%S"),
            "changes": json.dumps(changes), "reason": reason}


def test_a_scheduled_change_made_in_admin_is_applied_and_audited(admin_client, root):
    flag = stored("beta", rules=[{"kind": "percentage", "params": {"percentage": 10}}])

    response = admin_client.post(reverse("admin:flags_scheduledflagchange_add"),
                                 scheduled_form(flag, {"percentage": 50}))

    assert response.status_code == 302, response.context["adminform"].form.errors
    scheduled = ScheduledFlagChange.objects.get()
    assert scheduled.created_by == root and scheduled.applied_at is None

    assert scheduled_changes_apply(now=scheduled.run_at + timedelta(seconds=1)) == 1

    assert Flag.objects.get(key="beta").rules.get().params["percentage"] == 50
    change = FlagChange.objects.filter(flag_key="beta").first()
    assert (change.action, change.actor, change.reason) == ("scheduled", "scheduler", "scheduled: ramp at nine")
    assert change.before["rules"][0]["params"]["percentage"] == 10


@pytest.mark.parametrize("changes", [{"percentage": 150}, {"colour": "red"}, [], {}, "off",
                                     {"description": "nul\x00"}, {"rules": [{"kind": ["everyone"]}]}])
def test_scheduled_changes_are_checked_when_made(admin_client, changes):
    flag = stored("beta")

    response = admin_client.post(reverse("admin:flags_scheduledflagchange_add"), scheduled_form(flag, changes))

    assert response.status_code == 200 and "changes" in response.context["adminform"].form.errors
    assert not ScheduledFlagChange.objects.exists()


def test_apply_now_action(admin_client):
    flag = stored("beta", enabled=False)
    scheduled = ScheduledFlagChange.objects.create(flag=flag, run_at=timezone.now() + timedelta(days=1),
                                                   changes={"enabled": True}, reason="early launch")

    response = admin_client.post(reverse("admin:flags_scheduledflagchange_changelist"),
                                 {"action": "apply_now", "_selected_action": [scheduled.pk]})

    assert response.status_code == 302
    scheduled.refresh_from_db()
    assert scheduled.applied_at is not None
    assert Flag.objects.get(key="beta").enabled
    assert FlagChange.objects.filter(flag_key="beta").first().action == "scheduled"


def test_scheduled_changes_list_by_status(admin_client):
    flag = stored("beta")
    now = timezone.now()
    pending = ScheduledFlagChange.objects.create(flag=flag, run_at=now, changes={"enabled": False}, reason="p")
    applied = ScheduledFlagChange.objects.create(flag=flag, run_at=now, changes={}, reason="a", applied_at=now)
    errored = ScheduledFlagChange.objects.create(flag=flag, run_at=now, changes={}, reason="e", error="boom")
    changelist = reverse("admin:flags_scheduledflagchange_changelist")

    listed = {status: {row.pk for row in admin_client.get(changelist, {"status": status}).context["cl"].result_list}
              for status in ("pending", "applied", "errored")}

    assert listed == {"pending": {pending.pk}, "applied": {applied.pk}, "errored": {errored.pk}}
    page = admin_client.get(changelist).content.decode()
    assert all(status in page for status in ("pending", "applied", "errored"))
    # Applied rows are a record: shown read-only.
    assert "Save" not in admin_client.get(
        reverse("admin:flags_scheduledflagchange_change", args=[applied.pk])).content.decode().split("submit-row")[-1]


# --- the audit trail ------------------------------------------------------------------------------------


def test_the_audit_trail_is_read_only(admin_client):
    stored("beta")
    change = FlagChange.objects.get()

    assert admin_client.get(reverse("admin:flags_flagchange_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:flags_flagchange_add")).status_code == 403
    detail = admin_client.get(reverse("admin:flags_flagchange_change", args=[change.pk]))
    assert detail.status_code == 200 and 'name="reason"' not in detail.content.decode()
    assert admin_client.post(reverse("admin:flags_flagchange_delete", args=[change.pk]), {"post": "yes"}).status_code \
        == 403
    assert FlagChange.objects.count() == 1


def test_rules_have_no_admin_of_their_own():
    assert not admin.site.is_registered(FlagRule)
