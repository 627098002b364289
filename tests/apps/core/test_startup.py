"""The start-up line (apps/core/startup.py) names settings, database and broker, never credentials (issue 15 §0)."""

import logging

import pytest
from django.conf import settings

from apps.core.startup import configuration_summary, log_configuration, url_location


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/config", "amqp://127.0.0.1:5672/config"),
        ("rediss://:tok3n@cache.internal:6380/2?ssl_cert_reqs=required", "rediss://cache.internal:6380/2"),
        ("redis://user:pa55@[::1]:6379/0", "redis://[::1]:6379/0"),
        ("filesystem://localhost//", "filesystem://localhost//"),
    ],
)
def test_url_location_keeps_scheme_host_port_and_path_only(url, shown):
    assert url_location(url) == shown


def test_summary_and_log_line_hold_no_credentials(monkeypatch, caplog):
    # Patched on the real settings object: override_settings would hide SETTINGS_MODULE.
    database = {**settings.DATABASES["default"], "USER": "app", "PASSWORD": "db-pa55"}
    monkeypatch.setattr(settings, "DATABASES", {**settings.DATABASES, "default": database})
    monkeypatch.setattr(settings, "CELERY_BROKER_URL",
                        "amqp://guest:broker-pa55@rabbit:5672/vhost;amqp://guest:broker-pa55@rabbit2//")
    monkeypatch.setattr(settings, "REDIS_URL", "redis://:redis-pa55@cache:6379/1")

    summary = configuration_summary()
    with caplog.at_level(logging.INFO, logger="taskplane.startup"):
        log_configuration(process="web")

    assert summary["settings"] == "settings.test"
    assert summary["database"].startswith("postgresql 127.0.0.1:5432/")
    assert summary["broker"] == "amqp://rabbit:5672/vhost; amqp://rabbit2//"
    assert summary["redis"] == "redis://cache:6379/1"
    text = caplog.text + repr(summary)
    assert "pa55" not in text and "guest" not in text and " app" not in text
    assert "web (pid " in caplog.text and "broker amqp://rabbit:5672/vhost" in caplog.text
