"""issue 15 (smaller debts): the flags listener opened a new database connection for every version
poll. It keeps one for its thread, replaces it after an error, and finds changes whose Redis signal
was lost by polling (the 1 s target is measured by `make bench-flags`, not asserted here)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.db.backends.signals import connection_created

from apps.flags import services
from apps.flags import snapshot as flags_snapshot
from apps.flags.models import FlagsVersion
from tests.helpers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
# The real check, taken before the conftest holds the listener still for the other flags tests.
_real_check_version = flags_snapshot._check_version


@pytest.fixture
def listener(monkeypatch, settings):
    """This process's real listener thread, polling every 50 ms, with change signals lost.

    Yields the backend pid of every database connection the listener thread opened.
    """
    flags_snapshot.listener_stop()
    monkeypatch.setattr(flags_snapshot, "_check_version", _real_check_version)
    monkeypatch.setattr(services, "signal_change", lambda version: None)  # the Redis signal never arrives
    monkeypatch.setattr(services, "mark_dirty", lambda: None)  # and only the listener reloads
    settings.FLAGS_POLL_SECONDS = 0.05
    opened: list[int] = []

    def record(sender, connection, **kwargs) -> None:
        if threading.current_thread().name == "flags-listener":
            opened.append(connection.connection.info.backend_pid)

    connection_created.connect(record)
    flags_snapshot.reload()  # loads the snapshot and starts the listener
    try:
        wait_until(lambda: opened, timeout=30, interval=0.01, message="the listener's first version check")
        yield opened
    finally:
        connection_created.disconnect(record)
        flags_snapshot.listener_stop()


def _change(key: str, **fields) -> int:
    services.flag_save(definition={"key": key, "enabled": True, **fields}, actor="tests", reason="listener test")
    return FlagsVersion.objects.get(pk=1).version


def _seen_by_the_listener(version: int) -> None:
    wait_until(lambda: flags_snapshot._snapshot.version == version, timeout=30, interval=0.01,
               message=f"the listener to load flags v{version} without a signal")


def test_the_listener_keeps_one_connection_across_polls_and_finds_unsignalled_changes(listener):
    for n in range(3):
        _seen_by_the_listener(_change("listener.probe", description=f"change {n}"))

    assert len(listener) == 1, f"the listener opened {len(listener)} connections for 3 changes"


def test_the_listener_replaces_its_connection_after_an_error(listener):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [listener[0]])  # as a database restart would

    _seen_by_the_listener(_change("listener.after-kill"))

    assert len(listener) == 2 and listener[1] != listener[0]
    assert flags_snapshot._snapshot.flags["listener.after-kill"].enabled
