"""`make test`'s migration check needs no database and prints no warning (issue 15 §0)."""

import os
import subprocess

from tests.processes import ROOT


def test_check_migrations_is_quiet_and_needs_no_database():
    """issue 15 §0: `makemigrations --check` warned `database "taskplane" does not exist` in every `make test`."""
    # An unreachable server: the step must not try to connect to it at all.
    env_overrides = {"TEST_DATABASE_URL": "postgres://postgres@127.0.0.1:1/taskplane"}
    result = subprocess.run(["make", "--no-print-directory", "-s", "check-migrations"], cwd=ROOT,
                            env={**os.environ, **env_overrides}, capture_output=True, text=True,
                            timeout=300, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "No changes detected"
    assert result.stderr == "", "no warning, no traceback"
