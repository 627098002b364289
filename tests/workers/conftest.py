import pytest

from tests.workers.policy_support import effects_count, effects_create, effects_drop


@pytest.fixture
def effects():
    """A table counting committed effects of tests.policy.effect_once; returns its counter."""
    effects_create(fail_first=False)
    yield effects_count
    effects_drop()


@pytest.fixture
def effects_failing_first():
    """Like ``effects``, but the first effect fails (and is rolled back)."""
    effects_create(fail_first=True)
    yield effects_count
    effects_drop()
