"""Settings read the environment strictly: production refuses to start without what it needs."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from settings import env
from tests.processes import ROOT

VALID_PRODUCTION_ENV = {
    "SECRET_KEY": "production-test-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
    "ALLOWED_HOSTS": "taskplane.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "REDIS_URL": "redis://127.0.0.1:6379/1",
    "FERNET_KEYS": "ZGVwbG95LWNoZWNrLW9ubHktbm90LWEtc2VjcmV0ISE=",
}


def start_production(**overrides: str | None) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DJANGO_SETTINGS_MODULE": "settings.production"}
    environment.update(VALID_PRODUCTION_ENV)
    for name, value in overrides.items():
        if value is None:
            environment.pop(name)
        else:
            environment[name] = value
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_production_starts_with_every_variable_set():
    result = start_production()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(VALID_PRODUCTION_ENV))
def test_production_fails_naming_a_missing_variable(name):
    result = start_production(**{name: None})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and f"{name} is required" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", "short"),
        ("DATABASE_URL", "mysql://root@localhost/db"),
        ("CELERY_BROKER_URL", "localhost:6379"),
        ("FERNET_KEYS", "not-a-fernet-key"),
        ("DATABASE_CONN_MAX_AGE", "forever"),
        ("SECURE_SSL_REDIRECT", "maybe"),
        ("API_THROTTLE_RATE", "lots"),
        ("REDIS_URL", "memcached://cache:11211"),
    ],
)
def test_production_fails_naming_a_malformed_variable(name, value):
    result = start_production(**{name: value})

    assert result.returncode != 0
    assert name in result.stderr.strip().splitlines()[-1]
    if name == "FERNET_KEYS":
        assert value not in result.stderr, "key material is never echoed"


def test_boolean_accepts_only_clear_words(monkeypatch):
    monkeypatch.setenv("FLAG", "yes")
    assert env.boolean("FLAG") is True
    monkeypatch.setenv("FLAG", "off")
    assert env.boolean("FLAG") is False
    monkeypatch.setenv("FLAG", "sometimes")
    with pytest.raises(ImproperlyConfigured, match="FLAG must be a boolean"):
        env.boolean("FLAG")


def test_integer_bounds_and_defaults(monkeypatch):
    monkeypatch.delenv("COUNT", raising=False)
    assert env.integer("COUNT", 5) == 5
    monkeypatch.setenv("COUNT", "-1")
    with pytest.raises(ImproperlyConfigured, match="COUNT must be an integer >= 0"):
        env.integer("COUNT", 5, minimum=0)


def test_database_url_is_parsed(monkeypatch):
    monkeypatch.setenv("DB", "postgres://u:p@db.internal:6543/app")
    config = env.database("DB", schemes=("postgres",))
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 6543, "app")
