"""issue 15 §0: flags that code evaluates are declared in code, created by migrate when missing (never
changed when present, audited as created by "system"), and evaluate to their declared default
while they have no row. (The conftest empties the flag table first, as a fresh database would be.)"""

from __future__ import annotations

import logging
import threading

import pytest
from django.core.management import call_command
from django.db import connection

from apps.flags import declarations, get_details, is_enabled
from apps.flags.declarations import SCHEDULED_CHANGES, declare_flag, declared_flags
from apps.flags.definitions import DefinitionError
from apps.flags.models import Flag, FlagChange
from apps.flags.services import flag_create_missing, flag_save
from apps.orders.flags import AUTO_RESERVE
from tests.helpers import wait_until

DECLARED = {"orders.auto-reserve": AUTO_RESERVE, "flags.scheduled-changes": SCHEDULED_CHANGES}


@pytest.fixture(autouse=True)
def _declarations_restored(monkeypatch):
    """Flags these tests declare leave the process's registry with the test."""
    monkeypatch.setattr(declarations, "_declared", dict(declarations._declared))


def test_the_flags_code_evaluates_are_declared():
    from apps.orders.flags import AUTO_RESERVE
    from workers.tasks.flags import SCHEDULED_CHANGES_SWITCH

    declared = declared_flags()
    assert AUTO_RESERVE.key in declared and SCHEDULED_CHANGES_SWITCH in declared
    assert {key: (d.kind, d.default) for key, d in DECLARED.items()} == {
        "orders.auto-reserve": ("boolean", True), "flags.scheduled-changes": ("boolean", True)}
    assert all(declared[key].description for key in DECLARED)


@pytest.mark.django_db(transaction=True)
def test_migrate_creates_the_declared_flags_with_their_defaults_audited_as_system():
    assert not Flag.objects.filter(key__in=DECLARED).exists()

    call_command("migrate", verbosity=0)

    for key, declaration in DECLARED.items():
        flag = Flag.objects.get(key=key)
        assert (flag.kind, flag.enabled, flag.description) == ("boolean", declaration.default, declaration.description)
        assert not flag.rules.exists()
        (change,) = FlagChange.objects.filter(flag_key=key)
        assert (change.action, change.actor) == ("create", "system")
        assert declaration.declared_in in change.reason
    assert is_enabled("orders.auto-reserve") is True and get_details("orders.auto-reserve").reason == "STATIC"


@pytest.mark.django_db(transaction=True)
def test_migrate_never_changes_a_flag_that_exists():
    flag_save(definition={"key": AUTO_RESERVE.key, "enabled": False, "description": "paused by ops",
                          "rules": [{"kind": "users", "params": {"user_ids": ["7"]}}]},
              actor="alice", reason="incident 12")

    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)  # and a second migrate creates nothing either

    flag = Flag.objects.get(key=AUTO_RESERVE.key)
    assert (flag.enabled, flag.description, flag.version, flag.rules.count()) == (False, "paused by ops", 1, 1)
    assert list(FlagChange.objects.filter(flag_key=AUTO_RESERVE.key).values_list("actor", flat=True)) == ["alice"]
    assert FlagChange.objects.filter(flag_key=SCHEDULED_CHANGES.key, actor="system").count() == 1


@pytest.mark.django_db
def test_a_declared_flag_without_a_row_evaluates_to_its_declared_default(caplog):
    caplog.set_level(logging.WARNING, logger="apps.flags.evaluation")
    assert not Flag.objects.exists()

    details = get_details(AUTO_RESERVE.key)  # the caller's default (False) is not what decides

    assert (details.value, details.error_code) == (True, None)
    assert is_enabled(SCHEDULED_CHANGES.key) is True
    assert not caplog.records  # no "evaluated to its default: no flag named ..." warning


@pytest.mark.django_db(transaction=True)
def test_creating_a_missing_flag_waits_for_and_yields_to_an_operator_creating_it():
    """Both sides of the insert race: the operator's uncommitted create holds the key; migrate's
    create-if-missing waits on it, then finds the key taken and changes nothing."""
    inserted, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def operator() -> None:
        try:
            from django.db import transaction

            with transaction.atomic():
                flag_save(definition={"key": AUTO_RESERVE.key, "enabled": False}, actor="alice", reason="not yet")
                inserted.set()
                release.wait(30)
        finally:
            connection.close()

    def migrate_side() -> None:
        try:
            results["created"] = flag_create_missing(definition=AUTO_RESERVE.definition(), actor="system",
                                                     reason="declared in code")
        finally:
            connection.close()

    first = threading.Thread(target=operator)
    first.start()
    assert inserted.wait(30), "the operator's create did not run"
    second = threading.Thread(target=migrate_side)
    second.start()

    def waiting_on_a_lock() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'")
            return cursor.fetchone()[0] >= 1

    wait_until(waiting_on_a_lock, timeout=30, interval=0.02, message="create-if-missing to wait on the operator")
    release.set()
    first.join(30)
    second.join(30)

    assert results["created"] is None
    assert Flag.objects.get(key=AUTO_RESERVE.key).enabled is False
    assert list(FlagChange.objects.filter(flag_key=AUTO_RESERVE.key).values_list("actor", flat=True)) == ["alice"]


def test_a_key_declared_twice_differently_is_refused():
    declare_flag("tests.declared-once", description="one", default=False)
    declare_flag("tests.declared-once", description="one", default=False)  # the same again is fine

    with pytest.raises(ValueError, match="declared twice"):
        declare_flag("tests.declared-once", description="another", default=True)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"key": "Bad Key", "description": "x", "default": True}, DefinitionError),
    ({"key": "tests.not-bool", "description": "x", "default": "yes"}, TypeError),
    ({"key": "tests.no-variants", "description": "x", "default": "a", "kind": "multivariate"}, DefinitionError),
])
def test_an_invalid_declaration_fails_when_it_is_declared(kwargs, error):
    with pytest.raises(error):
        declare_flag(**kwargs)
    assert kwargs["key"] not in declared_flags()


def test_a_multivariate_declaration_serves_its_default_until_someone_turns_it_on():
    declaration = declare_flag("tests.variant", description="x", default="blue", kind="multivariate",
                               variants=[{"name": "blue", "value": "blue", "weight": 100}])

    assert declaration.definition()["enabled"] is False
    assert declaration.compiled.evaluate({}).value == "blue"
