"""EMAIL_URL parsing, the production requirement, and masking wherever configuration is printed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from settings import env
from tests.processes import ROOT

SMTP = "django.core.mail.backends.smtp.EmailBackend"


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://mailer:s3cret@mail.example.com:2525",
     {"EMAIL_HOST": "mail.example.com", "EMAIL_PORT": 2525, "EMAIL_HOST_USER": "mailer",
      "EMAIL_HOST_PASSWORD": "s3cret", "EMAIL_BACKEND": SMTP}),
    ("smtp+tls://mailer:p%40ss@mail.example.com", {"EMAIL_PORT": 587, "EMAIL_USE_TLS": True,
                                                   "EMAIL_HOST_PASSWORD": "p@ss"}),
    ("smtp+ssl://mail.example.com", {"EMAIL_PORT": 465, "EMAIL_USE_SSL": True}),
    ("smtp://127.0.0.1", {"EMAIL_PORT": 25}),
    ("console:", {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}),
])
def test_email_urls_parse(monkeypatch, url, expected):
    monkeypatch.setenv("EMAIL_URL", url)
    config = env.email("EMAIL_URL")
    assert {name: config.get(name) for name in expected} == expected


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp:mail.example.com", "smtp://", "memorymail://",
                                 "smtps://user:hunter2@mail.example.com", "console:/tmp"])
def test_bad_email_urls_name_the_variable_and_hide_the_password(monkeypatch, url):
    monkeypatch.setenv("EMAIL_URL", url)
    with pytest.raises(ImproperlyConfigured, match="EMAIL_URL must be an email URL") as caught:
        env.email("EMAIL_URL")
    assert "hunter2" not in str(caught.value)


def _manage(*args: str, **extra: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("EMAIL")}
    environment.update(TASKPLANE_ENV_FILE="off", **extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=120, check=False)


PRODUCTION = {"DJANGO_SETTINGS_MODULE": "settings.production",
              "SECRET_KEY": "x" * 60, "ALLOWED_HOSTS": "example.com",
              "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/taskplane",
              "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0", "REDIS_URL": "redis://127.0.0.1:6379/1",
              "FERNET_KEYS": "ZGVwbG95LWNoZWNrLW9ubHktbm90LWEtc2VjcmV0ISE=", "METRICS_TOKEN": "t",
              "PAYMENTS_URL": "https://payments.example.com/v1"}


def test_production_requires_email_url():
    result = _manage("check", **PRODUCTION)
    assert result.returncode != 0
    assert "EMAIL_URL is required but not set" in result.stderr


def test_show_config_masks_the_email_password():
    result = _manage("show_config", **PRODUCTION, EMAIL_URL="smtp+tls://mailer:hunter2@mail.example.com:587")
    assert result.returncode == 0, result.stderr
    assert "smtp+tls://mail.example.com:587" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr and "mailer" not in result.stdout
