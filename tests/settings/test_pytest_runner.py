"""`manage.py test [labels…]` runs the real pytest suite (settings/pytest_runner.py).

issue 15 §0: `manage.py test tests.apps.orders` printed "Ran 0 tests … OK", a silent false green:
Django's unittest discovery finds none of this pytest suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from django.core.management.base import CommandError

from settings.pytest_runner import ROOT, PytestRunner, pytest_target

PROBE = textwrap.dedent(
    """
    import os

    from django.conf import settings


    def test_fails():
        assert 1 + 1 == 3


    def test_passes():
        # The suite's settings and no developer .env, whatever the calling shell exported.
        assert settings.SETTINGS_MODULE == "settings.test"
        assert os.environ["TASKPLANE_ENV_FILE"] == "off"
    """
)


def manage_test(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", "test", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def probe(tmp_path):
    path = tmp_path / "test_probe.py"
    path.write_text(PROBE)
    return path


def test_a_dotted_label_runs_the_real_tests():
    """issue 15 §0: the label selects real tests, which run and pass (it was "Ran 0 tests")."""
    result = manage_test("tests.apps.core.test_startup")

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "5 passed" in result.stdout.splitlines()[-1]


def test_a_failing_test_fails_the_command_with_pytests_exit_code(probe):
    """issue 15 §0: one failing test makes `manage.py test` fail (exit 1, pytest's code for failures)."""
    result = manage_test(str(probe), DJANGO_SETTINGS_MODULE="settings.local")

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    assert "1 failed, 1 passed" in result.stdout.splitlines()[-1]


def test_options_reach_pytest(probe):
    result = manage_test(str(probe), "--failfast", "-v", "2")

    assert result.returncode == 1
    assert "test_probe.py::test_fails FAILED" in result.stdout
    assert "1 failed" in result.stdout.splitlines()[-1] and "passed" not in result.stdout.splitlines()[-1]

    selected = manage_test(str(probe), "-k", "passes")
    assert selected.returncode == 0, selected.stdout[-3000:]
    assert "1 passed, 1 deselected" in selected.stdout.splitlines()[-1]


def test_the_service_checks_run_first():
    """Same checks as pytest: an unreachable service stops the run at once (exit 3), naming it."""
    result = manage_test("tests.apps.core.test_startup", TEST_REDIS_URL="redis://127.0.0.1:1/0")

    assert result.returncode == 3
    assert "Required services are missing" in result.stdout + result.stderr and "Redis is unreachable" in (
        result.stdout + result.stderr)


def test_an_unknown_label_is_an_error_not_an_empty_run():
    result = manage_test("tests.apps.nope")

    assert result.returncode == 1
    assert "No test package, module, class or method 'tests.apps.nope'" in result.stderr


@pytest.mark.parametrize(
    ("label", "target"),
    [
        ("tests.apps.orders", "tests/apps/orders"),
        ("tests.apps.orders.test_orders_api", "tests/apps/orders/test_orders_api.py"),
        ("tests.settings.test_env.test_boolean_accepts_only_clear_words",
         "tests/settings/test_env.py::test_boolean_accepts_only_clear_words"),
        ("tests.apps.orders.test_orders_api.SomeClass.test_method",
         "tests/apps/orders/test_orders_api.py::SomeClass::test_method"),
        ("tests/apps/orders", "tests/apps/orders"),
        ("tests/settings/test_env.py::test_database_url_is_parsed",
         "tests/settings/test_env.py::test_database_url_is_parsed"),
    ],
)
def test_labels_become_pytest_paths(label, target):
    assert pytest_target(label, cwd=ROOT) == f"{ROOT}/{target}"


@pytest.mark.parametrize("label", ["tests.apps.nope", "tests/nope", "tests/nope.py::test_x"])
def test_unknown_labels_are_rejected(label):
    with pytest.raises(CommandError, match="No test"):
        pytest_target(label, cwd=ROOT)


def test_options_map_to_pytest_options():
    runner = PytestRunner(failfast=True, keepdb=True, pdb=True, verbosity=2, test_name_patterns=["a", "b and not c"])

    assert runner.pytest_arguments([]) == ["-x", "-k", "(a) or (b and not c)", "--reuse-db", "--pdb", "-v"]
    assert PytestRunner(verbosity=0).pytest_arguments([]) == ["-q"]
    assert PytestRunner().settings_module == "settings.test"
    waffle = "tests.benchmarks.waffle_settings"
    assert PytestRunner(settings=waffle).settings_module == waffle
