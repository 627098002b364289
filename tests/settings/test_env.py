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
    "EMAIL_URL": "smtp+tls://mailer@mail.example.com:587",
    "PAYMENTS_URL": "https://payments.example.com/v1",
}


def start_production(**overrides: str | None) -> subprocess.CompletedProcess:
    # TASKPLANE_ENV_FILE=off: a developer's .env must not fill in what the test leaves out.
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DJANGO_SETTINGS_MODULE": "settings.production",
                   "TASKPLANE_ENV_FILE": "off"}
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
        ("PAYMENTS_URL", "ftp://payments.example.com"),
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


# issue 15 §14: errors named the variable and repeated its raw value, so a mistyped DATABASE_URL
# printed its password (in the message, in the chained parser exception, or in a parser warning).
SECRET = "s3cret-Pa55"
LEAKY_VALUES = [
    ("DATABASE_URL", f"postgres://app:{SECRET}/x@db.internal/app"),  # "/" in the password: port parse error
    ("DATABASE_URL", f"postgres://app:{SECRET}@db.internal:port/app"),
    ("DATABASE_URL", f"postgresql//app:{SECRET}@db.internal/app"),  # missing ":" (parser warning)
    ("DATABASE_URL", f"mysql2x://app:{SECRET}@db.internal/app"),  # unknown scheme
    ("DATABASE_URL", f"sqlite://app:{SECRET}@host/app.sqlite3"),  # host in a SQLite URL (parser warning)
    ("DATABASE_URL", f"postgres://app:{SECRET}"),  # forgot @host: the password parses as a port
    ("CELERY_BROKER_URL", f"redis//:{SECRET}@cache:6379/0"),
    ("CELERY_BROKER_URL", f"app:{SECRET}@cache:6379"),
    ("REDIS_URL", f"memcached://app:{SECRET}@cache:11211"),
]


@pytest.mark.parametrize(("name", "value"), LEAKY_VALUES)
def test_malformed_url_errors_never_echo_credentials(name, value, monkeypatch):
    """issue 15 §14: the error names the variable and shows the value with its userinfo masked."""
    monkeypatch.setenv(name, value)
    reader = {"DATABASE_URL": lambda: env.database(name, schemes=("postgres", "postgresql")),
              "CELERY_BROKER_URL": lambda: env.url(name, schemes=("redis", "amqp")),
              "REDIS_URL": lambda: env.url(name, schemes=("redis",))}[name]
    if "sqlite" in value:
        reader = lambda: env.database(name)  # noqa: E731 - local.py accepts every database scheme

    with pytest.raises(ImproperlyConfigured) as caught:
        reader()

    message = str(caught.value)
    assert message.startswith(f"{name} must be") and "***" in message
    assert SECRET not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__, "no chained parser error"


@pytest.mark.parametrize(("name", "value"), [("SECRET_KEY", SECRET), ("FERNET_KEYS", f"{SECRET},also-bad"),
                                             ("METRICS_TOKEN", SECRET), ("API_KEY_LIMIT", SECRET)])
def test_secret_like_variables_are_never_shown(name, value, monkeypatch):
    """issue 15 §14: for SECRET/PASSWORD/TOKEN/KEY(S) variables the error only says the value is malformed."""
    monkeypatch.setenv(name, value)
    readers = {"FERNET_KEYS": env.fernet_keys, "API_KEY_LIMIT": env.integer}
    with pytest.raises(ImproperlyConfigured, match=f"^{name} must be .*the value is not shown") as caught:
        (readers.get(name) or (lambda variable: env.url(variable, schemes=("https",))))(name)
    assert SECRET not in str(caught.value)


def test_redact_masks_userinfo_and_query_values():
    assert env.redact(f"postgres://app:{SECRET}@db:5432/app?password={SECRET}") == "postgres://***@db:5432/app?password=***"
    assert env.redact("redis://cache:6379/0") == "redis://cache:6379/0"


def test_a_plain_value_is_still_shown(monkeypatch):
    monkeypatch.setenv("SECURE_SSL_REDIRECT", "maybe")
    with pytest.raises(ImproperlyConfigured, match="got 'maybe'"):
        env.boolean("SECURE_SSL_REDIRECT")


@pytest.mark.parametrize(("name", "value"), LEAKY_VALUES)
def test_a_process_started_with_a_leaky_value_prints_no_secret(name, value):
    """issue 15 §14: the whole start-up failure (traceback, warnings, chained errors) holds no password."""
    result = start_production(**{name: value})

    assert result.returncode != 0
    assert name in result.stderr.strip().splitlines()[-1]
    assert SECRET not in result.stderr + result.stdout
