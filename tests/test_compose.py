"""The compose stack's definitions parse, and platform/ never shadows the standard library's module.

Runs without Django (``pytest tests/test_compose.py -p no:django``). ``docker compose config``
only reads and interpolates the files, so no Docker engine is needed, only a Compose client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
PLATFORM_DIR = ROOT / "platform"
# The compose file requires these (${VAR:?...}); config needs values, not real secrets.
DUMMY_SECRETS = {
    "SECRET_KEY": "compose-config-test-only-not-a-secret-0123456789abcdefghij",
    "FERNET_KEYS": "compose-config-test-only-not-a-key",
    "PAYMENTS_URL": "https://payments.example.com/v1",
}


def _compose_command() -> list[str]:
    """Return the Compose client's argv prefix, or skip when no client is installed."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone]
    if docker is None:
        pytest.skip("docker client not installed: compose files are checked where the client is present")
    pytest.skip("docker client present without Compose (no `docker compose` plugin, no docker-compose)")


def _environment(**overrides: str) -> dict[str, str]:
    # COMPOSE_* variables on the developer's machine (COMPOSE_FILE, COMPOSE_PROFILES) would change
    # what is being checked; the secrets are set only by the caller.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("COMPOSE_") and name not in DUMMY_SECRETS
    }
    env.update(overrides)
    return env


def _compose_config(profiles: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    profile_args = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE_FILE), *profile_args, "config", "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "profiles",
    [pytest.param([], id="default"), pytest.param(["rabbitmq", "observability"], id="all-profiles")],
)
def test_compose_file_is_valid(profiles):
    result = _compose_config(profiles, _environment(**DUMMY_SECRETS))
    assert result.returncode == 0, f"compose config failed ({result.returncode}):\n{result.stderr}"


def test_compose_requires_secret_key():
    result = _compose_config([], _environment(FERNET_KEYS=DUMMY_SECRETS["FERNET_KEYS"]))
    assert result.returncode != 0, "compose config accepted a stack without SECRET_KEY"
    assert "SECRET_KEY" in result.stderr, result.stderr


def test_platform_holds_no_python_files():
    assert PLATFORM_DIR.is_dir()
    python_files = sorted(str(path.relative_to(ROOT)) for path in PLATFORM_DIR.rglob("*.py"))
    assert python_files == [], f"platform/ must hold no Python (it would shadow the stdlib): {python_files}"


def test_stdlib_platform_is_not_shadowed_from_repo_root():
    # `python -c` puts the working directory first on sys.path, as manage.py, celery and gunicorn
    # do when started from the repository root; PYTHONPATH names it explicitly as well.
    code = "import platform, uuid; print(platform.system()); print(platform.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    system, module_file = result.stdout.splitlines()
    assert system, "platform.system() returned nothing"
    assert not Path(module_file).resolve().is_relative_to(PLATFORM_DIR.resolve()), module_file
