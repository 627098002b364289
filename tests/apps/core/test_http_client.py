"""The resilient HTTP client against a scripted local server: retries, Retry-After, idempotency,
timeouts, per-host breakers, rate limits, propagation, spans, metrics and redacted logs, the response
size cap, and bounded metric labels and breaker maps. Waits are checked through the delays the
client decided (its retry log), not by timing it; time bounds here only catch hangs."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from contextlib import ExitStack

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from apps.core.http_client import HttpConnectionError, HttpTimeoutError, ResponseTooLarge, http_client
from apps.core.request_context import set_request_id
from apps.core.resilience import BreakerPolicy, CircuitOpen, RateLimit, RateLimited, RetryPolicy, SharedRedis, metrics
from apps.core.resilience.redis_state import reset_shared_redis
from tests.apps.core.resilience.forked import run_forked
from tests.apps.core.resilience.samples import sample
from tests.apps.core.resilience.scripted_server import Reply, ScriptedServer
from tests.helpers import free_port

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.02, max_delay=0.1, max_total_delay=3,
                         retry_on=(HttpConnectionError,), retry_on_statuses={429, 503})


@pytest.fixture(autouse=True)
def _resilience_db():
    redis.Redis.from_url(settings.RESILIENCE_REDIS_URL).flushdb()
    reset_shared_redis()
    yield
    set_request_id(None)


@pytest.fixture
def server():
    with ScriptedServer() as running:
        yield running


def client(server, **options):
    options.setdefault("timeout", (1, 2))
    options.setdefault("retry", FAST_RETRY)
    return http_client(f"test-{uuid.uuid4().hex[:6]}", base_url=server.base_url, **options)


def retry_delays(caplog) -> list[float]:
    """The waits the client decided on, from its retry log records."""
    return [record.retry_delay for record in caplog.records if hasattr(record, "retry_delay")]


@pytest.fixture
def retries(caplog):
    caplog.set_level(logging.INFO, logger="apps.core.http_client")
    return lambda: retry_delays(caplog)


def test_a_503_with_retry_after_is_retried_after_that_long(server, retries):
    server.script("/r", Reply(503, {"Retry-After": "1"}))

    response = client(server).get("/r")

    assert response.status_code == 200
    assert len(server.requests_to("/r")) == 2
    (delay,) = retries()
    assert delay >= 1.0  # the wait the client chose (issue 15: no timing assertion)


def test_a_retry_after_beyond_the_total_delay_is_not_waited_for(server, retries):
    server.script("/r", Reply(503, {"Retry-After": "30"}))

    started = time.monotonic()
    response = client(server).get("/r")

    assert response.status_code == 503  # handed back, Retry-After and all, for the caller to schedule
    assert len(server.requests_to("/r")) == 1 and retries() == []
    assert time.monotonic() - started < 25  # only catches a hang: waiting the 30 s would fail it


def test_backoff_stops_at_the_max_total_delay(server, retries):
    server.script("/r", *[Reply(503)] * 100)
    policy = RetryPolicy(max_attempts=100, base_delay=0.05, max_delay=0.1, max_total_delay=0.5,
                         retry_on_statuses={503})

    response = client(server, retry=policy, breaker=None).get("/r")

    seen = server.requests_to("/r")
    assert response.status_code == 503
    assert 2 < len(seen) < 100  # the time budget, not max_attempts, ended it
    assert len(retries()) == len(seen) - 1 and sum(retries()) <= 0.5  # no wait planned beyond the budget


def test_429_is_retried_for_idempotent_methods(server):
    server.script("/r", Reply(429), Reply(429))

    assert client(server).put("/r", json={"a": 1}).status_code == 200
    assert [seen.body for seen in server.requests_to("/r")] == [b'{"a": 1}'] * 3  # the body is re-sent whole


def test_a_post_without_idempotency_key_is_never_retried(server):
    server.script("/r", Reply(503), Reply(reset=True))
    session = client(server)

    assert session.post("/r", json={}).status_code == 503
    with pytest.raises(HttpConnectionError):
        session.post("/r", json={})

    assert len(server.requests_to("/r")) == 2


def test_a_post_with_idempotency_key_is_retried(server):
    server.script("/r", Reply(503), Reply(reset=True))

    response = client(server).post("/r", json={"n": 1}, headers={"Idempotency-Key": "k-1"})

    assert response.status_code == 200
    assert [seen.headers["Idempotency-Key"] for seen in server.requests_to("/r")] == ["k-1"] * 3


def test_connection_resets_are_retried_for_get(server):
    server.script("/r", Reply(reset=True))

    assert client(server).get("/r").status_code == 200
    assert len(server.requests_to("/r")) == 2


def test_a_slow_upstream_times_out_and_a_missing_timeout_gets_the_default(server):
    server.script("/slow", Reply(delay=2.0), Reply(delay=2.0))
    session = client(server, timeout=(1, 0.2))

    with pytest.raises(HttpTimeoutError):
        session.get("/slow")
    with pytest.raises(HttpTimeoutError):  # the answer would come after 2 s: without a timeout, no error
        session.get("/slow", timeout=None)  # None means "the client's timeout", never "forever"
    assert len(server.requests_to("/slow")) == 2  # read timeouts are not retried by default


def test_a_failing_host_opens_its_own_breaker_only(server):
    server.script("/r", Reply(500), Reply(500))
    session = client(server, breaker=BreakerPolicy(failure_threshold=2, open_for=30))

    assert [session.get("/r").status_code for _ in range(2)] == [500, 500]
    with pytest.raises(CircuitOpen):
        session.get("/r")
    assert len(server.requests_to("/r")) == 2

    other_host = server.base_url.replace("127.0.0.1", "localhost")
    assert session.get(f"{other_host}/r").status_code == 200


def _get_in_child(name: str, base_url: str) -> str:
    session = http_client(name, base_url=base_url, timeout=1, retry=None,
                          breaker=BreakerPolicy(failure_threshold=2, open_for=30))
    try:
        return str(session.get("/r").status_code)
    except CircuitOpen:
        return "open"


def test_the_breaker_is_shared_by_clients_of_the_same_name_in_other_processes(server):
    name = f"shared-{uuid.uuid4().hex[:6]}"
    server.script("/r", Reply(500), Reply(500))

    assert run_forked(_get_in_child, [(name, server.base_url)] * 2, timeout=30) == ["500", "500"]
    assert run_forked(_get_in_child, [(name, server.base_url)] * 3, timeout=30) == ["open"] * 3
    assert len(server.requests_to("/r")) == 2


def test_a_shared_rate_limit_refuses_beyond_the_limit(server):
    session = client(server, rate_limit=RateLimit(limit=2, period=60))

    session.get("/r")
    session.get("/r")
    with pytest.raises(RateLimited):
        session.get("/r")
    assert len(server.requests_to("/r")) == 2


def test_request_id_and_trace_context_are_propagated(server):
    set_request_id("req-123")
    parent = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    with trace.use_span(NonRecordingSpan(parent)):
        client(server).get("/r")

    (seen,) = server.requests_to("/r")
    assert seen.headers["X-Request-ID"] == "req-123"
    assert seen.headers["traceparent"] == f"00-{0x1234:032x}-{0x5678:016x}-01"
    assert seen.headers["User-Agent"].startswith("taskplane-test-")


def test_relative_paths_join_the_base_url_and_absolute_urls_pass_through(server):
    session = http_client("join", base_url=server.base_url + "/api/", timeout=1)

    session.get("/orders")
    session.get(server.url("/elsewhere"))

    assert [seen.path for seen in server.seen] == ["/api/orders", "/elsewhere"]


def test_metrics_by_client_host_and_status_class(server):
    server.script("/r", Reply(503), Reply(404))
    session = client(server)
    host = server.base_url.removeprefix("http://")

    session.get("/r")  # 503 then 200
    session.get("/r")  # 404

    labels = {"client": session.name, "host": host}
    assert sample(metrics.HTTP_REQUESTS, {**labels, "status_class": "5xx"}, "_total") == 1
    assert sample(metrics.HTTP_REQUESTS, {**labels, "status_class": "2xx"}, "_total") == 1
    assert sample(metrics.HTTP_REQUESTS, {**labels, "status_class": "4xx"}, "_total") == 1
    assert sample(metrics.HTTP_RETRIES, {**labels, "reason": "status"}, "_total") == 1
    assert sample(metrics.HTTP_SECONDS, labels, "_count") == 3


def test_secret_headers_never_reach_the_logs(server, caplog):
    caplog.set_level(logging.DEBUG, logger="apps.core.http_client")
    server.script("/r?token=abc123", Reply(reset=True))
    session = client(server, retry=None)

    with pytest.raises(HttpConnectionError):
        session.get("/r?token=abc123", headers={"Authorization": "Bearer s3cr3t-value", "X-Api-Key": "k-secret"})
    session.get("/r", headers={"Cookie": "sessionid=c00kie"})

    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert caplog.records
    for secret in ("s3cr3t-value", "k-secret", "c00kie", "abc123"):
        assert secret not in logged
    assert "[REDACTED]" in logged


def _traced_calls() -> dict:
    # In a forked child: tracing (global provider, patched requests) stays out of the test process.
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from apps.core import telemetry

    exporter = InMemorySpanExporter()
    telemetry.configure(exporter=exporter)
    with ScriptedServer() as server:
        server.script("/r", Reply(503))
        http_client("traced", base_url=server.base_url, timeout=2, breaker=None).get("/r")
        traceparents = [seen.headers.get("traceparent") for seen in server.seen]
    spans = [
        {"kind": span.kind.name, "status": span.attributes.get("http.response.status_code",
                                                              span.attributes.get("http.status_code")),
         "ids": f"{span.context.trace_id:032x}-{span.context.span_id:016x}"}
        for span in exporter.get_finished_spans() if span.instrumentation_scope.name.endswith("requests")
    ]
    return {"spans": spans, "traceparents": traceparents}


def test_each_attempt_is_a_client_span_that_is_the_servers_parent():
    (report,) = run_forked(_traced_calls, [()], timeout=30)

    spans = report["spans"]
    assert [(span["kind"], span["status"]) for span in spans] == [("CLIENT", 503), ("CLIENT", 200)]
    # traceparent is version-traceid-spanid-flags; each attempt's parent is its own client span.
    assert [header.split("-")[1:3] for header in report["traceparents"]] == [
        span["ids"].split("-") for span in spans
    ]


# --- issue 15 §12: the response size cap --------------------------------------------------------------------

@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_refused(server, chunked):
    server.script("/big", Reply(body=b"x" * 2_000_000, chunked=chunked))
    server.script("/small", Reply(body=b"y" * 1000, chunked=chunked))
    session = client(server, max_response_bytes=1000)

    with pytest.raises(ResponseTooLarge, match="1000"):
        session.get("/big")
    assert session.get("/small").content == b"y" * 1000  # at the cap is fine
    assert sample(metrics.HTTP_ERRORS, {"client": session.name, "host": server.base_url.removeprefix("http://"),
                                        "error": "too_large"}, "_total") == 1


def test_the_cap_defaults_to_the_setting_and_none_turns_it_off(server):
    server.script("/r", Reply(body=b"z" * 5000), Reply(body=b"z" * 5000))

    with override_settings(HTTP_CLIENT_MAX_RESPONSE_BYTES=4096):
        capped, uncapped = client(server), client(server, max_response_bytes=None)
    with pytest.raises(ResponseTooLarge):
        capped.get("/r")
    assert len(uncapped.get("/r").content) == 5000


def test_a_streamed_response_under_the_cap_still_iterates(server):
    server.script("/r", Reply(body=b"abc" * 1000, chunked=True))

    response = client(server, max_response_bytes=10_000).get("/r", stream=True)

    assert b"".join(response.iter_content(100)) == b"abc" * 1000


# --- issue 15 §12: bounded metric labels and breaker maps ----------------------------------------------------

def refusing_ports(count: int, stack: ExitStack) -> list[int]:
    """Loopback ports that refuse connections at once: bound, never listening, held for the test."""
    ports = []
    for _ in range(count):
        sock = stack.enter_context(socket.socket())
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
    return ports


def _breaker_series(session) -> set[str]:
    prefix = f"http:{session.name}:"
    return {found.labels["breaker"] for family in metrics.BREAKER_STATE.collect() for found in family.samples
            if found.labels["breaker"].startswith(prefix)}


def test_unknown_hosts_share_one_metric_label_and_the_base_host_keeps_its_own(server):
    session = client(server, retry=None)
    base = server.base_url.removeprefix("http://")

    with ExitStack() as stack:
        for port in refusing_ports(30, stack):
            with pytest.raises(HttpConnectionError):
                session.get(f"http://127.0.0.1:{port}/hook")
    session.get("/r")

    hosts = {found.labels["host"] for family in metrics.HTTP_REQUESTS.collect() for found in family.samples
             if found.labels["client"] == session.name}
    assert hosts == {base, "other"}
    assert sample(metrics.HTTP_REQUESTS, {"client": session.name, "host": "other", "status_class": "error"},
                  "_total") == 30
    assert _breaker_series(session) == {f"http:{session.name}:{base}", f"http:{session.name}:other"}


@pytest.mark.parametrize("state", ["redis", "process-local"])
def test_the_breaker_map_is_bounded_and_an_active_hosts_circuit_stays_open(server, state):
    store = (SharedRedis(settings.RESILIENCE_REDIS_URL) if state == "redis"
             else SharedRedis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, down_for=60))
    with override_settings(HTTP_CLIENT_MAX_HOST_BREAKERS=8):
        session = client(server, retry=None, redis=store, breaker=BreakerPolicy(failure_threshold=1, open_for=60))

    with ExitStack() as stack:
        active, *others = refusing_ports(40, stack)
        with pytest.raises(HttpConnectionError):
            session.get(f"http://127.0.0.1:{active}/")  # one failure opens this host's circuit
        for port in others:
            with pytest.raises(HttpConnectionError):
                session.get(f"http://127.0.0.1:{port}/")  # each of 39 other hosts gets a breaker of its own
            with pytest.raises(CircuitOpen):
                session.get(f"http://127.0.0.1:{active}/")  # the active host stays open throughout

    assert session._breaker_for.cache_info().currsize <= 8
    assert len(_breaker_series(session)) == 1  # every one of those hosts is "other"
