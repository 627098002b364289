"""Checks of what an owner sends for an endpoint: URL (with the SSRF guard), custom headers, rate limit."""

from __future__ import annotations

import re
from typing import Any

from apps.core.http_client import UrlRefused
from apps.notifications.client import webhook_url_guard
from apps.notifications.errors import InvalidEndpoint, field_error

MAX_URL_LENGTH = 2000
MAX_HEADERS = 20
MAX_HEADER_VALUE = 1000
_TOKEN = re.compile(r"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}\Z")
# Headers Taskplane sets itself (or the HTTP layer does): an endpoint cannot replace them.
RESERVED_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                              "content-length", "host", "transfer-encoding", "connection", "user-agent",
                              "traceparent", "tracestate", "x-request-id"})


def endpoint_url_check(*, url: Any) -> str:
    """The URL if the guard lets it through now (scheme, allow-list, resolved addresses); InvalidEndpoint otherwise."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_LENGTH:
        raise InvalidEndpoint(f"The URL must be a string of 1 to {MAX_URL_LENGTH} characters.", errors=[
            field_error("url", "Not a URL.")])
    try:
        webhook_url_guard().check_resolved(url)
    except UrlRefused as exc:
        raise InvalidEndpoint(f"This URL cannot receive webhooks: {exc}",
                           errors=[field_error("url", str(exc))]) from None
    return url


def endpoint_headers_check(*, headers: Any) -> dict[str, str]:
    """Custom headers as given, or InvalidEndpoint for a bad name, a reserved one or a value with a line break."""
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise InvalidEndpoint(f"headers must be an object of at most {MAX_HEADERS} name/value strings.")
    for name, value in headers.items():
        if not _TOKEN.match(name) or name.lower() in RESERVED_HEADERS:
            raise InvalidEndpoint(f"Header name {name!r} is not allowed (reserved or not an HTTP token).",
                               errors=[field_error("headers", f"{name!r} is not allowed.")])
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\0"):
            raise InvalidEndpoint(f"Header {name!r} needs a single-line string value of at most {MAX_HEADER_VALUE} "
                               "characters.", errors=[field_error("headers", f"{name!r} has a bad value.")])
    return dict(headers)
