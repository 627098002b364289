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
