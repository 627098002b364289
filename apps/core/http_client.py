"""The one way Taskplane code calls out over HTTP (tests/test_no_direct_requests.py enforces it).

``http_client(name, base_url=..., timeout=...)`` returns a requests session that always has a
timeout, retries only what is safe to send twice, stops calling a failing host (a breaker per
host, shared by every process), can respect a shared rate limit, reads at most a capped response
body, propagates X-Request-ID and the W3C trace context, and reports metrics by client, host and
status class with secrets kept out of its logs. ``url_guard=UrlGuard.from_settings()`` makes it safe
for user-supplied URLs (apps/core/resilience/url_guard.py). Create one per dependency and process,
and reuse it: it pools connections.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import requests
from opentelemetry import propagate
from requests.structures import CaseInsensitiveDict

from apps.core.logs import mask_text
from apps.core.request_context import get_request_id
from apps.core.resilience import metrics
from apps.core.resilience.breaker import BreakerPolicy, CircuitBreaker, Permit
from apps.core.resilience.errors import CircuitOpen, RateLimited
from apps.core.resilience.http_support import (
    BREAKER_FAILURE_STATUSES,
    RETRY_STATUSES,
    host_of,
    is_replayable,
    redact_headers,
    retry_after_seconds,
    status_class,
)
from apps.core.resilience.rate_limit import RateLimit, RateLimiter
from apps.core.resilience.redis_state import SharedRedis
from apps.core.resilience.retry import RetryPolicy
from apps.core.resilience.timeouts import HttpTimeout
from apps.core.resilience.url_guard import GuardedAdapter, UrlGuard, UrlRefused, _AddressRefused

logger = logging.getLogger(__name__)

# What callers catch, so that no module outside this one needs to import requests.
HttpError = requests.RequestException
HttpConnectionError = requests.ConnectionError
HttpTimeoutError = requests.Timeout
Response = requests.Response
__all__ = ["HttpConnectionError", "HttpError", "HttpTimeoutError", "Response", "ResponseTooLarge", "UrlGuard",
           "UrlRefused", "http_client"]

FROM_SETTINGS: Any = object()  # marker default: build the policy from settings
# The metric label every host outside base_url and the guard's allow-list shares: a client calling
# user-supplied URLs must not create a Prometheus series per host.
OTHER_HOST = "other"
_CHUNK = 64 * 1024


class ResponseTooLarge(requests.RequestException):
    """The response body is larger than the client's max_response_bytes; it was not read further."""


def default_retry_policy(**overrides: Any) -> RetryPolicy:
    """Retry connection errors, 429 and 503 with the HTTP_CLIENT_* settings, plus keyword overrides."""
    from django.conf import settings

    policy = RetryPolicy(
        max_attempts=settings.HTTP_CLIENT_MAX_ATTEMPTS,
        base_delay=settings.HTTP_CLIENT_BACKOFF_BASE_SECONDS,
        max_delay=settings.HTTP_CLIENT_BACKOFF_MAX_SECONDS,
        max_total_delay=settings.HTTP_CLIENT_MAX_TOTAL_DELAY_SECONDS,
        retry_on=(requests.ConnectionError,),
        retry_on_statuses=RETRY_STATUSES,
    )
    return replace(policy, **overrides)


def http_client(
    name: str,
    *,
    base_url: str | None,
    timeout: float | tuple[float, float] | HttpTimeout,
    retry: RetryPolicy | None = FROM_SETTINGS,
    breaker: BreakerPolicy | None = FROM_SETTINGS,
    rate_limit: RateLimit | None = None,
    redis: SharedRedis | None = None,
    url_guard: UrlGuard | None = None,
    max_response_bytes: int | None = FROM_SETTINGS,
) -> ResilientSession:
    """Return a session for one dependency; ``None`` turns retry, the breaker or the size cap off."""
    from django.conf import settings

    return ResilientSession(
        name,
        base_url=base_url,
        timeout=HttpTimeout.of(timeout),
        retry=default_retry_policy() if retry is FROM_SETTINGS else retry,
        breaker=BreakerPolicy.from_settings() if breaker is FROM_SETTINGS else breaker,
        rate_limit=rate_limit,
        redis=redis,
        url_guard=url_guard,
        max_response_bytes=(settings.HTTP_CLIENT_MAX_RESPONSE_BYTES if max_response_bytes is FROM_SETTINGS
                            else max_response_bytes),
        max_host_breakers=settings.HTTP_CLIENT_MAX_HOST_BREAKERS,
    )


class ResilientSession(requests.Session):
    """A requests.Session whose every request goes through timeouts, limiter, breaker and retry."""

    def __init__(
        self, name: str, *, base_url: str | None, timeout: HttpTimeout, retry: RetryPolicy | None,
        breaker: BreakerPolicy | None, rate_limit: RateLimit | None, redis: SharedRedis | None,
        url_guard: UrlGuard | None = None, max_response_bytes: int | None = None, max_host_breakers: int = 1000,
    ) -> None:
        super().__init__()
        self.name = name
        self.base_url = base_url.rstrip("/") + "/" if base_url else None
        self.timeout = timeout
        self.retry = retry
        self.breaker_policy = breaker
        self.limiter = RateLimiter(f"http:{name}", rate_limit, redis=redis) if rate_limit else None
        self.url_guard = url_guard
        self.max_response_bytes = max_response_bytes
        self._redis = redis
        self._known_hosts = frozenset({host_of(self.base_url)} if self.base_url else ())
        # Least recently used breakers beyond the bound are dropped: their state lives on in Redis
        # (or in the bounded process-local state), so a recreated breaker carries on where it was.
        self._breaker_for = functools.lru_cache(maxsize=max_host_breakers)(self._new_breaker)
        self.headers["User-Agent"] = f"taskplane-{name} {self.headers['User-Agent']}"
        if max_response_bytes is not None:
            self.hooks["response"].append(self._read_capped)  # runs for every response, redirect hops too
        if url_guard is not None:
            self.trust_env = False  # no proxies or .netrc from the environment: a proxy resolves hosts unchecked
            self.max_redirects = url_guard.max_redirects
            for prefix in ("http://", "https://"):
                self.mount(prefix, GuardedAdapter(url_guard))

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send with the client's protections; raises CircuitOpen, RateLimited, UrlRefused or a requests error."""
        method, url = method.upper(), self._absolute(url)
        host = host_of(url)
        label = self._host_label(host)
        if self.url_guard is not None:
            # Off unless asked for: a redirect is a second URL the caller did not choose.
            kwargs.setdefault("allow_redirects", False)
            try:
                self.url_guard.check_url(url)
            except UrlRefused:
                metrics.HTTP_ERRORS.labels(self.name, label, "refused").inc()
                raise
        headers = CaseInsensitiveDict(kwargs.pop("headers", None) or {})
        self._propagate(headers)
        kwargs["headers"] = headers
        # A caller may shorten or lengthen the timeout of one request, never remove it.
        kwargs["timeout"] = HttpTimeout.of(kwargs.get("timeout") or self.timeout).as_requests()
        sent_headers = CaseInsensitiveDict(self.headers)
        sent_headers.update(headers)
        replayable = is_replayable(method, sent_headers, data=kwargs.get("data"), files=kwargs.get("files"))
        schedule = self.retry.schedule() if self.retry is not None and replayable else None
        breaker = self._breaker_for(host)
        while True:
            if schedule is not None:
                schedule.start_attempt()
            attempt = schedule.attempt if schedule is not None else 1
            if self.limiter is not None:
                self._take_rate_slot(label)  # per attempt: a partner's quota counts retries too
            permit = self._permit(breaker, label)
            started = time.perf_counter()
            try:
                response = super().request(method, url, **kwargs)
            except requests.RequestException as exc:
                self._observe(label, started, None, exc, breaker, permit)
                delay = schedule.next_delay() if schedule is not None and self.retry.should_retry(exc) else None
                if delay is None:
                    logger.warning("HTTP %s %s failed after %d attempt(s): %s", method, mask_text(url), attempt,
                                   type(exc).__name__, extra=self._log_context(method, url, sent_headers, attempt))
                    raise
                self._wait_before_retry(method, url, label, attempt, delay, type(exc).__name__)
                continue
            self._observe(label, started, response, None, breaker, permit)
            if schedule is not None and self.retry.should_retry_status(response.status_code):
                retry_after = retry_after_seconds(response.headers.get("Retry-After")) or 0.0
                delay = schedule.next_delay(at_least=retry_after)
                if delay is not None:
                    response.close()
                    self._wait_before_retry(method, url, label, attempt, delay, f"status {response.status_code}")
                    continue
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("HTTP %s %s -> %d (attempt %d)", method, mask_text(url), response.status_code, attempt,
                             extra=self._log_context(method, url, sent_headers, attempt))
            return response

    def get(self, url: str, params: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """GET; unlike requests, leaves the redirect default to ``request`` (off for a guarded client)."""
        return self.request("GET", url, params=params, **kwargs)

    def options(self, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """OPTIONS; the redirect default is ``request``'s, as for ``get``."""
        return self.request("OPTIONS", url, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """requests sends every hop through here, redirects included: each is vetted by the guard."""
        if self.url_guard is None:
            return super().send(request, **kwargs)
        if kwargs.get("proxies"):
            raise UrlRefused("A guarded client does not use proxies: the proxy would resolve the host unchecked.")
        self.url_guard.check_url(request.url)
        try:
            return super().send(request, **kwargs)
        except _AddressRefused as exc:
            raise UrlRefused(str(exc), request=request) from None

    def _read_capped(self, response: requests.Response, **_: Any) -> requests.Response:
        """Read the body now, but never more than max_response_bytes of it (a response hook)."""
        limit = self.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise ResponseTooLarge(f"The response declares {declared} bytes; this client reads at most {limit}.",
                                   response=response)
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > limit:
                response.close()  # the rest is never read; the connection is not reused
                raise ResponseTooLarge(f"The response is larger than {limit} bytes, the most this client reads.",
                                       response=response)
        # What Response.content would have stored; stream=True callers iterate over it the same way.
        response._content = bytes(body)
        return response

    def _host_label(self, host: str) -> str:
        """The metric label of ``host`` (host[:port]): itself when known, else its allow-list entry or "other"."""
        if host in self._known_hosts:
            return host
        if self.url_guard is not None and self.url_guard.allowed_hosts:
            entry = self.url_guard.host_entry(urlsplit(f"//{host}").hostname or "")
            if entry is not None:
                return entry  # "*.example.com" stands for all its subdomains: still one label
        return OTHER_HOST

    def _absolute(self, url: str) -> str:
        if self.base_url is None or "://" in url:
            return url
        return self.base_url + url.lstrip("/")

    @staticmethod
    def _propagate(headers: CaseInsensitiveDict) -> None:
        request_id = get_request_id()
        if request_id and "X-Request-ID" not in headers:
            headers["X-Request-ID"] = request_id
        # W3C traceparent of the current span; the requests instrumentation (when tracing is on)
        # replaces it with its own client span, which is then the server's parent.
        propagate.inject(headers)

    def _take_rate_slot(self, label: str) -> None:
        try:
            self.limiter.acquire()
        except RateLimited:
            metrics.HTTP_ERRORS.labels(self.name, label, "rate_limited").inc()
            raise

    def _new_breaker(self, host: str) -> CircuitBreaker | None:
        if self.breaker_policy is None:
            return None
        # One breaker per (client, host): a webhook client's dead subscriber must not stop the others.
        # Its metrics carry the host's bounded label, its state the host itself.
        return CircuitBreaker(f"http:{self.name}:{host}", self.breaker_policy, redis=self._redis,
                              metric_label=f"http:{self.name}:{self._host_label(host)}")

    def _permit(self, breaker: CircuitBreaker | None, label: str) -> Permit | None:
        if breaker is None:
            return None
        try:
            return breaker.allow()
        except CircuitOpen:
            metrics.HTTP_ERRORS.labels(self.name, label, "circuit_open").inc()
            raise

    def _observe(self, label: str, started: float, response: requests.Response | None, exc: Exception | None,
                 breaker: CircuitBreaker | None, permit: Permit | None) -> None:
        metrics.HTTP_SECONDS.labels(self.name, label).observe(time.perf_counter() - started)
        if response is not None:
            metrics.HTTP_REQUESTS.labels(self.name, label, status_class(response.status_code)).inc()
            failed = response.status_code in BREAKER_FAILURE_STATUSES
        else:
            metrics.HTTP_REQUESTS.labels(self.name, label, "error").inc()
            metrics.HTTP_ERRORS.labels(self.name, label, _error_kind(exc)).inc()
            failed = isinstance(exc, requests.ConnectionError | requests.Timeout)
            if not failed:
                return  # a malformed request says nothing about the host; leave the breaker alone
        if breaker is not None and permit is not None:
            (breaker.record_failure if failed else breaker.record_success)(permit)

    def _wait_before_retry(self, method: str, url: str, label: str, attempt: int, delay: float, reason: str) -> None:
        metrics.HTTP_RETRIES.labels(self.name, label, reason.split(" ")[0]).inc()
        logger.info("HTTP %s %s: retrying in %.2fs after attempt %d (%s)", method, mask_text(url), delay, attempt,
                    reason, extra={"http_client": self.name, "retry_delay": round(delay, 3)})
        time.sleep(delay)

    def _log_context(self, method: str, url: str, headers: CaseInsensitiveDict, attempt: int) -> dict[str, Any]:
        return {"http_client": self.name, "http_method": method, "http_url": mask_text(url), "http_attempt": attempt,
                "http_request_headers": redact_headers(headers)}


def _error_kind(exc: Exception | None) -> str:
    if isinstance(exc, UrlRefused):
        return "refused"
    if isinstance(exc, ResponseTooLarge):
        return "too_large"
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.ConnectionError):
        return "connection"
    return "other"
