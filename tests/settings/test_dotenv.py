"""One configuration for every entry point: the .env file (settings/env.py), and `manage.py migrate` from it.

issue 15 §0: `manage.py` under real services silently used the SQLite file, because the README exported
the URLs for `make run` only, so an API key was created in the wrong database. manage.py, `make run`
(tests/test_run_stack.py), `celery -A workers` and gunicorn's settings.wsgi/settings.asgi now read the
same .env file first; variables already in the environment win; the file may pick the settings module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from settings import env as settings_env
from tests.helpers import stop_process_group, wait_until
from tests.processes import ROOT
from tests.settings.support import empty_postgres_database, user_environment, write_env_file

SECRET = "dotenv-s3cret"


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def sqlite_env_file(tmp_path) -> tuple[Path, Path]:
    """A .env choosing settings.local on a SQLite file of its own; returns (env file, database file)."""
    database = tmp_path / "from-dotenv.sqlite3"
    path = write_env_file(tmp_path / "dotenv", {
        "DJANGO_SETTINGS_MODULE": "settings.local", "TASKPLANE_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{database}", "LOG_LEVEL": "INFO",
    })
    return path, database


@pytest.fixture
def fresh_postgres():
    with empty_postgres_database("dotenv", password=SECRET) as url:
        yield url


def test_manage_py_reads_the_env_file(sqlite_env_file):
    """issue 15 §0: with the URLs in .env only, manage.py uses them (it used the default SQLite file)."""
    env_file, database = sqlite_env_file

    result = run("manage.py", "show_config", env=user_environment(env_file))

    assert result.returncode == 0, result.stderr
    assert f"sqlite {database}" in result.stdout and "settings.local" in result.stdout


@pytest.mark.parametrize("module", ["settings.wsgi", "settings.asgi"])
def test_web_entry_points_read_the_env_file_and_say_where_they_run(module, sqlite_env_file):
    """issue 15 §0: gunicorn's settings.wsgi (and settings.asgi) read .env before defaulting to production."""
    env_file, database = sqlite_env_file

    result = run("-c", f"import {module}", env=user_environment(env_file))

    assert result.returncode == 0, result.stderr  # production settings would have refused to start
    assert "web (pid " in result.stderr and f"uses settings settings.local, database sqlite {database}" in result.stderr


def test_celery_worker_reads_the_env_file_and_says_where_it_runs(sqlite_env_file, tmp_path):
    """issue 15 §0: `celery -A workers worker` reads .env (it defaulted to production settings and stopped)."""
    env_file, database = sqlite_env_file
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency", "1"],
                                   cwd=ROOT, env=user_environment(env_file), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        line = wait_until(
            lambda: next((text for text in log_path.read_text().splitlines() if " uses settings " in text), None)
            or process.poll() is not None,
            timeout=90, message=f"the worker's start-up line (log {log_path})")
    finally:
        stop_process_group(process)
    assert line is not True, log_path.read_text()[-3000:]  # True: the worker exited before saying anything
    assert "worker celery@" in line and f"settings settings.local, database sqlite {database}" in line
    assert "broker filesystem://localhost//" in line


def test_the_environment_wins_over_the_env_file(sqlite_env_file, tmp_path):
    env_file, _ = sqlite_env_file
    chosen = tmp_path / "from-environment.sqlite3"

    result = run("manage.py", "show_config", env=user_environment(env_file, DATABASE_URL=f"sqlite:///{chosen}"))

    assert result.returncode == 0, result.stderr
    assert f"sqlite {chosen}" in result.stdout


def test_the_env_file_may_choose_the_settings_module(tmp_path):
    env_file = write_env_file(tmp_path / "dotenv", {"DJANGO_SETTINGS_MODULE": "settings.test"})

    result = run("manage.py", "show_config", env=user_environment(env_file))

    assert result.returncode == 0, result.stderr
    assert "settings.test" in result.stdout


def test_the_repository_env_file_is_the_default(tmp_path):
    """Without TASKPLANE_ENV_FILE the file is <repository>/.env (replaced here: tests never write the real one)."""
    env_file = write_env_file(tmp_path / ".env", {"TASKPLANE_DOTENV_PROBE": "read"})
    code = ("import os, pathlib; from settings import env; "
            f"env.DEFAULT_ENV_FILE = pathlib.Path({str(env_file)!r}); env.read_env_file(); "
            "print(os.environ['TASKPLANE_DOTENV_PROBE'])")
    environment = user_environment(env_file)
    del environment["TASKPLANE_ENV_FILE"]

    result = run("-c", code, env=environment)

    assert (result.returncode, result.stdout.strip()) == (0, "read"), result.stderr
    assert settings_env.DEFAULT_ENV_FILE == ROOT / ".env"


def test_off_reads_no_file(sqlite_env_file):
    env_file, database = sqlite_env_file
    environment = user_environment(env_file, TASKPLANE_ENV_FILE="off")

    result = run("manage.py", "show_config", env=environment)

    assert result.returncode == 0, result.stderr
    assert str(database) not in result.stdout


def test_the_suite_itself_reads_no_env_file():
    """Tests must not pick up a developer's .env: this process and every child it starts have it off."""
    assert os.environ["TASKPLANE_ENV_FILE"] == "off"


def test_a_named_file_that_does_not_exist_stops_the_process(tmp_path):
    result = run("manage.py", "show_config", env=user_environment(tmp_path / "missing"))

    assert result.returncode != 0
    assert "TASKPLANE_ENV_FILE names" in result.stderr.strip().splitlines()[-1]


def test_a_malformed_line_stops_the_process_without_showing_it(tmp_path):
    """django-environ would skip it with a warning quoting the line, secret included; the process stops instead."""
    env_file = tmp_path / "dotenv"
    env_file.write_text(f"# comment\nDATABASE_URL = postgres://app:{SECRET}@db/app\n")

    result = run("manage.py", "show_config", env=user_environment(env_file))

    assert result.returncode != 0
    assert f"{env_file}, line 2: expected NAME=value" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_migrate_on_a_fresh_sqlite_database_from_the_env_file(sqlite_env_file):
    """issue 15 §0 (design card: users run `manage.py migrate`): a fresh SQLite file, configured in .env."""
    env_file, database = sqlite_env_file
    env = user_environment(env_file)

    migrate = run("manage.py", "migrate", "--noinput", env=env, timeout=300)

    assert migrate.returncode == 0, migrate.stderr
    assert database.is_file()
    assert run("manage.py", "migrate", "--check", env=env).returncode == 0, "every migration is applied"


def test_migrate_on_a_fresh_postgres_database_from_the_env_file(fresh_postgres, tmp_path):
    """issue 15 §0: a fresh PostgreSQL database, configured in .env; the password in the URL is never printed."""
    env_file = write_env_file(tmp_path / "dotenv", {"DATABASE_URL": fresh_postgres,
                                                    "TASKPLANE_VAR_DIR": str(tmp_path / "var")})
    env = user_environment(env_file)

    migrate = run("manage.py", "migrate", "--noinput", env=env, timeout=300)

    assert migrate.returncode == 0, migrate.stderr
    assert run("manage.py", "migrate", "--check", env=env).returncode == 0, "every migration is applied"
    with psycopg.connect(fresh_postgres) as conn:
        assert conn.execute("SELECT count(*) FROM django_migrations").fetchone()[0] > 0
    shown = run("manage.py", "show_config", env=env)
    assert "postgresql 127.0.0.1" in shown.stdout and SECRET not in shown.stdout + shown.stderr
