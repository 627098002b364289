"""The HTTP rules the client applies: replay safety, Retry-After parsing, header redaction."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from apps.core.resilience.http_support import host_of, is_replayable, redact_headers, retry_after_seconds


@pytest.mark.parametrize(("method", "headers", "body", "replayable"), [
    ("GET", {}, None, True),
    ("delete", {}, None, True),
    ("PUT", {}, b"{}", True),
    ("POST", {}, b"{}", False),
    ("PATCH", {}, {"a": 1}, False),
    ("POST", {"Idempotency-Key": "k"}, b"{}", True),
    ("POST", {"Idempotency-Key": ""}, b"{}", False),
    ("PUT", {}, io.BytesIO(b"stream"), False),  # a consumed stream cannot be re-sent
])
def test_only_requests_safe_to_send_twice_are_replayable(method, headers, body, replayable):
    assert is_replayable(method, headers, data=body) is replayable


def test_retry_after_as_seconds_or_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert retry_after_seconds("7") == 7
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0  # in the past: go now
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_secret_headers_are_redacted_and_others_masked():
    redacted = redact_headers({
        "Authorization": "Bearer abc.def", "Proxy-Authorization": "Basic eA==", "X-Api-Key": "k",
        "Cookie": "a=b", "X-Hub-Signature-256": "sha256=1", "X-Callback": "https://u:p@example.com/x",
        "Accept": "application/json",
    })

    assert {name for name, value in redacted.items() if value == "[REDACTED]"} == {
        "Authorization", "Proxy-Authorization", "X-Api-Key", "Cookie", "X-Hub-Signature-256",
    }
    assert redacted["X-Callback"] == "https://u:[REDACTED]@example.com/x"
    assert redacted["Accept"] == "application/json"


def test_host_drops_credentials():
    assert host_of("https://user:pw@API.Example.com:8443/v1") == "api.example.com:8443"
