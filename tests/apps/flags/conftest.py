import pytest

from apps.flags import snapshot as flags_snapshot


@pytest.fixture(autouse=True)
def _own_snapshot(monkeypatch):
    """Evaluate this test's uncommitted flags: reload on first use and hold the listener thread still.

    The listener reloads from committed rows, which would swap this test's flags out of the snapshot;
    the next test (in any module) reloads again.
    """
    monkeypatch.setattr(flags_snapshot, "_check_version", lambda: None)
    flags_snapshot.mark_dirty()
    yield
    flags_snapshot.mark_dirty()


@pytest.fixture(autouse=True)
def _no_declared_rows(request):
    """Start from an empty flag table: migrate created the flags declared in code (and their audit
    entries) in the test database, and these tests count flags and changes. Evaluation still knows
    the declared flags; tests/apps/flags/test_declarations.py covers them."""
    if request.node.get_closest_marker("django_db") is None:
        yield
        return
    request.getfixturevalue("db")  # the marker decides whether it is transactional
    from apps.flags.models import Flag, FlagChange

    Flag.objects.all().delete()
    FlagChange.objects.all().delete()
    yield
