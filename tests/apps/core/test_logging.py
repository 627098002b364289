"""Log output as a deployment writes it: JSON lines with context, secrets masked (captured from a real process)."""

import json
import subprocess
import sys
import textwrap

import pytest

from apps.core.logs import mask_text
from tests.processes import ROOT

SCRIPT = textwrap.dedent(
    """
    import logging, django
    django.setup()
    from django.test import Client
    log = logging.getLogger("taskplane.example")
    log.info("login password=%s token: %s", "hunter2", "abc.def")
    log.info("headers %s", {"Authorization": "Bearer tp_secretsecretsecretsecret", "Cookie": "sessionid=s3cr3t"})
    log.info("mail alice@example.com paid with 4111 1111 1111 1111, order 1234567890123")
    log.info("db postgres://app:pa55word@db:5432/app", extra={"api_key": "tp_extraextraextraextra"})
    try:
        raise ValueError("failed with password=leaky")
    except ValueError:
        log.exception("boom")
    from opentelemetry import trace
    with trace.get_tracer("test").start_as_current_span("work"):
        log.info("inside a span")
    Client().get("/api/missing/", HTTP_X_REQUEST_ID="req-42", HTTP_AUTHORIZATION="Bearer tp_headerheaderheaderheader")
    """
)


@pytest.fixture(scope="module")
def log_lines():
    env = {"DJANGO_SETTINGS_MODULE": "settings.test", "LOG_FORMAT": "json", "TRACING_ENABLED": "true",
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    return lines


def _find(lines, fragment):
    return next(line for line in lines if fragment in line["message"])


def test_every_line_is_json_with_standard_fields(log_lines):
    for line in log_lines:
        assert {"timestamp", "level", "logger", "message"} <= set(line)


def test_secrets_and_pii_never_reach_the_output(log_lines):
    text = json.dumps(log_lines)
    for secret in ("hunter2", "abc.def", "tp_secretsecret", "s3cr3t", "alice@example.com", "4111 1111 1111 1111",
                   "pa55word", "tp_extraextra", "leaky", "tp_headerheader"):
        assert secret not in text, secret
    assert "1234567890123" in text, "numbers that fail the Luhn check are not card numbers"
    assert _find(log_lines, "db postgres")["api_key"] == "[REDACTED]"


def test_exceptions_are_logged_masked(log_lines):
    line = _find(log_lines, "boom")
    assert "ValueError" in line["exc_info"] and "[REDACTED]" in line["exc_info"]


def test_lines_carry_request_and_trace_ids(log_lines):
    assert _find(log_lines, "Not Found: /api/missing/")["request_id"] == "req-42"
    line = _find(log_lines, "inside a span")
    assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"password": "x1"}', '{"password": "[REDACTED]"}'),
        ("Authorization: Basic Zm9vOmJhcg==", "Authorization: [REDACTED]"),
        ("redis://:topsecret@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        ("amqp://app:se/cr/et@mq:5672/vh", "amqp://app:[REDACTED]@mq:5672/vh"),
        ("see http://example.com:8080/docs", "see http://example.com:8080/docs"),
        ("card 5555-5555-5555-4444 ok", "card [REDACTED_CARD] ok"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_mask_text(raw, expected):
    assert mask_text(raw) == expected
