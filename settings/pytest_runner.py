"""TEST_RUNNER for `manage.py test [labels…]`: runs the pytest suite, never Django's unittest discovery.

The suite is written for pytest (fixtures, markers, the service checks in tests/conftest.py), so
Django's DiscoverRunner finds nothing in it and prints a green "Ran 0 tests". This runner hands the
labels and the common options to pytest in a child process under the test settings, and exits with
pytest's exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.core.management.base import CommandError

from settings.env import ENV_FILE_VARIABLE

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS = "settings.test"


def pytest_target(label: str, *, cwd: Path) -> str:
    """Turn a label (a path, a path::node id, or a dotted module/class/method) into a pytest argument."""
    path, separator, node = label.partition("::")
    candidate = cwd / path
    if separator or "/" in path or path.endswith(".py") or candidate.exists():
        if not candidate.exists():
            raise CommandError(f"No test file or directory {path!r}.")
        return f"{candidate.resolve()}{separator}{node}"
    parts = label.split(".")
    location = ROOT
    for index, part in enumerate(parts):
        if (location / part).is_dir():
            location = location / part
        elif (location / f"{part}.py").is_file():
            return "::".join([str(location / f"{part}.py"), *parts[index + 1 :]])
        else:
            raise CommandError(f"No test package, module, class or method {label!r} (looked under {ROOT}).")
    return str(location)


class PytestRunner:
    """Run the pytest suite for `manage.py test`; its exit code is pytest's."""

    def __init__(self, *, failfast: bool = False, keepdb: bool = False, pdb: bool = False, verbosity: int = 1,
                 test_name_patterns: list[str] | None = None, settings: str | None = None, **kwargs) -> None:
        self.failfast = failfast
        self.keepdb = keepdb
        self.pdb = pdb
        self.verbosity = verbosity
        self.patterns = test_name_patterns or []
        # `--settings` chooses another module; DJANGO_SETTINGS_MODULE from the shell does not, because a
        # developer who exported settings.local for `manage.py` would otherwise test against SQLite.
        self.settings_module = settings or DEFAULT_SETTINGS

    @classmethod
    def add_arguments(cls, parser) -> None:
        """The options `manage.py test` accepts; each has a pytest equivalent."""
        parser.add_argument("--failfast", action="store_true", help="Stop at the first failure (pytest -x).")
        parser.add_argument("-k", action="append", dest="test_name_patterns", metavar="EXPRESSION",
                            help="Only tests matching this pytest -k expression; several are OR-ed.")
        parser.add_argument("--keepdb", action="store_true",
                            help="Keep the test database between runs (pytest-django --reuse-db).")
        parser.add_argument("--pdb", action="store_true", help="Open the debugger on a failure or error.")

    def pytest_arguments(self, test_labels: list[str] | tuple[str, ...]) -> list[str]:
        """Return pytest's command-line arguments for these labels and options."""
        arguments = [pytest_target(label, cwd=Path.cwd()) for label in test_labels]
        if self.failfast:
            arguments.append("-x")
        if self.patterns:
            arguments += ["-k", " or ".join(f"({pattern})" for pattern in self.patterns)]
        if self.keepdb:
            arguments.append("--reuse-db")
        if self.pdb:
            arguments.append("--pdb")
        arguments += {0: ["-q"], 1: [], 2: ["-v"]}.get(self.verbosity, ["-vv"])
        return arguments

    def run_tests(self, test_labels, **kwargs) -> int:
        """Run pytest in a child process; exit with its code unless every selected test passed."""
        command = [sys.executable, "-m", "pytest", *self.pytest_arguments(test_labels)]
        environment = {**os.environ, "DJANGO_SETTINGS_MODULE": self.settings_module, ENV_FILE_VARIABLE: "off"}
        returncode = subprocess.run(command, cwd=ROOT, env=environment, check=False).returncode  # noqa: S603
        if returncode:
            raise SystemExit(returncode)
        return 0
