"""Small HTTP rules the client applies: replay safety, Retry-After, status classes, header redaction."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from apps.core.logs import REDACTED, mask_text

# RFC 9110 idempotent methods: sending one twice has the effect of sending it once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Statuses that mean "try again later" without saying the request was wrong.
RETRY_STATUSES = frozenset({429, 503})
# Statuses that count against a host's circuit breaker: the server, not the request, is failing.
BREAKER_FAILURE_STATUSES = frozenset({500, 502, 503, 504})

_SECRET_HEADER = re.compile(r"authorization|cookie|token|secret|api[-_]?key|password|signature|session", re.I)


def is_replayable(method: str, headers: Mapping[str, str], *, data: Any = None, files: Any = None) -> bool:
    """True when sending this request again cannot duplicate an effect and its body can be re-sent."""
    if method.upper() not in IDEMPOTENT_METHODS and not headers.get(IDEMPOTENCY_HEADER):
        return False
    # A stream or file is consumed by the first attempt; a retry would send an empty or partial body.
    return files is None and (data is None or isinstance(data, bytes | str | dict | list | tuple))


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header (delta-seconds or HTTP-date) into seconds; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def status_class(status: int) -> str:
    """"2xx" for 200..299 and so on: the label metrics use."""
    return f"{status // 100}xx"


def host_of(url: str) -> str:
    """host[:port] of a URL, without credentials, lower-cased."""
    return (urlsplit(url).netloc.rpartition("@")[2]).lower()


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers safe to log: secret-bearing ones replaced, the rest masked like any log text."""
    return {
        name: REDACTED if _SECRET_HEADER.search(name) else mask_text(str(value)) for name, value in headers.items()
    }
