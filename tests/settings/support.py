"""A new user's shell for child processes: no Taskplane variable, configuration in a .env file only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.conf import settings

# Variables the test process may carry that would configure a child behind the .env file's back.
CONFIGURING = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR",
               "TASKPLANE_VAR_DIR", "PORT", "HOST", "CELERY_LOG_LEVEL", "LOG_LEVEL", "LOG_FORMAT")


def write_env_file(path: Path, variables: dict[str, str]) -> Path:
    """Write ``variables`` as a .env file (NAME=value lines) and return its path."""
    lines = "".join(f"{name}={value}\n" for name, value in variables.items())
    path.write_text(f"# written by the test suite\n{lines}")
    return path


def user_environment(env_file: Path | str, **extra: str) -> dict[str, str]:
    """PATH and friends, no Taskplane or TEST_* variable, and TASKPLANE_ENV_FILE naming ``env_file``."""
    env = {name: value for name, value in os.environ.items()
           if name not in CONFIGURING and not name.startswith(("TEST_", "PYTEST_"))}
    # Stands for the repository's .env, which tests never write.
    env.update({"TASKPLANE_ENV_FILE": str(env_file), **extra})
    return env


@contextmanager
def empty_postgres_database(suffix: str, *, password: str) -> Iterator[str]:
    """An empty PostgreSQL database named after this run's test database (parallel runs do not collide).

    Yields its URL with ``password`` in it: trust authentication ignores it, so it can stand in a URL
    to prove that no process prints it.
    """
    db = settings.DATABASES["default"]
    name = f"{db['TEST']['NAME']}_{suffix}"
    admin = dict(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://{db['USER']}:{password}@{db['HOST']}:{db['PORT'] or 5432}/{name}"
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
