#!/usr/bin/env python
"""Django's command-line utility; defaults to the embedded local settings (`test` to the test settings)."""

import sys

from settings import env


def main() -> None:
    testing = sys.argv[1:2] == ["test"]
    # `manage.py test` runs the suite, which never reads a developer's .env (docs/operations.md).
    env.load(default_settings="settings.test" if testing else "settings.local", read_file=not testing)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
