"""The one HTTP session webhook attempts go through, built from the WEBHOOKS_* settings.

Every protection comes from apps.core.http_client: the URL guard (SSRF: addresses vetted at connect,
redirects not followed), the total timeout, the response cap and a breaker per endpoint host. It
does not retry by itself: a webhook's retries are rows with a due time (WEBHOOKS_RETRY_SCHEDULE).
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings

from apps.core.http_client import ResilientSession, UrlGuard, http_client
from apps.core.resilience.rate_limit import RateLimit, RateLimiter

EVERY_NETWORK = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
RATE_LIMITER_NAME = "webhooks-endpoint"  # one metric series for all endpoints; the key is the endpoint


def webhook_url_guard() -> UrlGuard:
    """What endpoint URLs may be: https (and http when allowed), allow-listed hosts, public addresses unless allowed."""
    return UrlGuard(schemes=frozenset({"https", "http"} if settings.WEBHOOKS_ALLOW_HTTP else {"https"}),
                    allowed_hosts=tuple(settings.WEBHOOKS_ALLOWED_HOSTS),
                    allowed_networks=EVERY_NETWORK if settings.WEBHOOKS_ALLOW_PRIVATE_HOSTS else ())


def webhook_session() -> ResilientSession:
    """The process's session for the current settings (tests change them; a new guard gets a new session)."""
    return _session(webhook_url_guard(), settings.WEBHOOKS_TIMEOUT_SECONDS, settings.WEBHOOKS_MAX_RESPONSE_BYTES)


@functools.cache
def _session(guard: UrlGuard, timeout: int, max_bytes: int) -> ResilientSession:
    return http_client("webhooks", base_url=None, timeout=float(timeout), retry=None, url_guard=guard,
                       max_response_bytes=max_bytes)


def endpoint_rate_limiter(*, per_second: int) -> RateLimiter:
    """The shared (Redis) limiter of an endpoint's rate; ``check(key=endpoint id)`` takes a slot."""
    return RateLimiter(RATE_LIMITER_NAME, RateLimit(limit=per_second, period=1.0))
