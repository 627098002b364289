"""`manage.py flag`: set (audited, creating boolean flags), show, list, history, and clear errors."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.flags.models import Flag, FlagChange
from apps.flags.services import flag_delete, flag_save

pytestmark = pytest.mark.django_db


def flag(*args: str) -> str:
    out = StringIO()
    call_command("flag", *args, stdout=out)
    return out.getvalue()


def stored(key: str = "beta", **fields) -> Flag:
    return flag_save(definition={"key": key, "enabled": True, "rules": [], **fields}, actor="setup", reason="fixture")


def test_set_creates_a_boolean_flag_and_records_who_and_why():
    output = flag("set", "beta", "--enable", "--percentage", "30", "--description", "Beta UI",
                  "--reason", "start the beta", "--actor", "cli:alice")

    assert "Created beta (on): version 1" in output
    created = Flag.objects.get(key="beta")
    assert (created.kind, created.enabled, created.description) == ("boolean", True, "Beta UI")
    assert [(rule.kind, rule.params) for rule in created.rules.all()] == [("percentage", {"percentage": 30})]
    change = FlagChange.objects.get(flag_key="beta")
    assert (change.action, change.actor, change.reason, change.before) == ("create", "cli:alice", "start the beta",
                                                                           None)
    assert change.after["enabled"] is True


def test_a_new_flag_is_off_unless_enabled():
    flag("set", "beta", "--reason", "prepare")

    assert Flag.objects.get(key="beta").enabled is False


def test_the_default_actor_names_the_shell_user():
    flag("set", "beta", "--reason", "prepare")

    assert FlagChange.objects.get().actor.startswith("cli")


def test_set_updates_an_existing_flag_with_before_and_after():
    stored("beta", rules=[{"kind": "percentage", "params": {"percentage": 10}}])

    output = flag("set", "beta", "--disable", "--percentage", "12.5", "--reason", "errors rose")

    assert "Updated beta: version 2" in output
    updated = Flag.objects.get(key="beta")
    assert updated.enabled is False and updated.rules.get().params == {"percentage": 12.5}
    change = FlagChange.objects.filter(flag_key="beta").first()
    assert (change.action, change.reason) == ("update", "errors rose")
    assert (change.before["enabled"], change.after["enabled"]) == (True, False)
    assert change.after["rules"][0]["params"]["percentage"] == 12.5


@pytest.mark.parametrize("value", ["150", "-1", "nan"])
def test_a_percentage_out_of_range_names_the_field_and_changes_nothing(value):
    stored("beta", rules=[{"kind": "percentage", "params": {"percentage": 10}}])

    with pytest.raises(CommandError, match=r"rules\[0\]\.params\.percentage"):
        flag("set", "beta", "--percentage", value, "--reason", "too far")

    assert Flag.objects.get(key="beta").version == 1 and FlagChange.objects.count() == 1


def test_an_invalid_new_flag_is_not_created():
    with pytest.raises(CommandError, match="percentage"):
        flag("set", "beta", "--percentage", "101", "--reason", "oops")

    assert not Flag.objects.exists() and not FlagChange.objects.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["set", "beta", "--enable"], "--reason"),
    (["set", "beta", "--enable", "--reason", "  "], "reason"),
    (["set", "beta", "--percentage", "lots", "--reason", "x"], "--percentage must be a number"),
    (["set", "beta", "--enable", "--disable", "--reason", "x"], "not allowed with"),
    (["set", "Bad Key", "--enable", "--reason", "x"], "key"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_input_is_a_clear_command_error(args, message):
    with pytest.raises(CommandError, match=message):
        flag(*args)

    assert not Flag.objects.exists() and not FlagChange.objects.exists()


def test_set_with_nothing_to_change_is_refused():
    stored("beta")

    with pytest.raises(CommandError, match="Nothing to change"):
        flag("set", "beta", "--reason", "just because")

    assert Flag.objects.get(key="beta").version == 1


def test_show_prints_definition_version_and_recent_changes():
    stored("beta", rules=[{"kind": "users", "params": {"user_ids": [7]}}])
    flag_save(definition={"key": "beta", "enabled": False, "rules": []}, actor="alice", reason="pause it")

    output = flag("show", "beta")

    assert output.startswith("beta (boolean, off), version 2")
    assert '"enabled": false' in output
    assert "v2 update by alice: pause it" in output and "v1 create by setup: fixture" in output


def test_show_of_an_unknown_flag_is_an_error():
    with pytest.raises(CommandError, match="No flag named 'missing'"):
        flag("show", "missing")


def test_list_prints_every_flag():
    stored("alpha", description="first")
    stored("beta", enabled=False)

    lines = flag("list").splitlines()

    assert [line.split()[:3] for line in lines] == [["alpha", "on", "boolean"], ["beta", "off", "boolean"]]
    assert lines[0].endswith("first")


def test_list_with_no_flags():
    assert flag("list").strip() == "No flags."


def test_history_prints_changes_with_their_diff():
    stored("beta")
    flag("set", "beta", "--disable", "--reason", "incident 7", "--actor", "cli:bob")

    output = flag("history", "beta")

    first, *rest = output.splitlines()
    assert "update by cli:bob: incident 7" in first
    assert "      enabled: true -> false" in rest
    assert "create by setup: fixture" in output


def test_history_survives_deletion_and_unknown_flags_are_errors():
    stored("beta")
    flag_delete(key="beta", actor="alice", reason="shipped")

    assert "delete by alice: shipped" in flag("history", "beta")
    with pytest.raises(CommandError, match="No changes recorded"):
        flag("history", "never")
