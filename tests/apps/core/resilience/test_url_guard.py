"""issue 15 §12: the URL guard of the HTTP client, against real local servers.

A guarded client refuses schemes and hosts outside its allow-lists and every non-public address
after DNS resolution, connects to the address it vetted (no DNS-rebinding gap), follows no redirect
unless asked and then vets every hop, and reads at most its size cap. Only loopback is reachable
here, so tests that need an answer allow 127.0.0.1 explicitly; the others must be refused before
any connection is attempted, which the ``_loopback_only`` safety net enforces.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from apps.core.http_client import ResponseTooLarge, UrlGuard, UrlRefused, http_client
from apps.core.resilience import metrics
from apps.core.resilience.redis_state import reset_shared_redis
from apps.core.resilience.url_guard import address_refusal
from tests.apps.core.resilience.samples import sample
from tests.apps.core.resilience.scripted_server import Reply, ScriptedServer

LOOPBACK_ONLY = ("127.0.0.1/32",)
_real_connect = socket.socket.connect


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Fail the test at once if anything here tries to connect beyond 127.0.0.1 (no traffic may leave)."""
    attempts = []

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host != "127.0.0.1":
            attempts.append(host)
            raise AssertionError(f"the test tried to connect to {host}")
        return _real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    redis.Redis.from_url(settings.RESILIENCE_REDIS_URL).flushdb()
    reset_shared_redis()
    yield
    assert not attempts, f"connections attempted beyond loopback: {attempts}"


@pytest.fixture
def server():
    with ScriptedServer() as running:
        yield running


@pytest.fixture
def resolver(monkeypatch):
    """Stub DNS answers for names under .example (no resolver is reachable here); others resolve for real."""
    answers: dict[str, list[list[str]]] = {}
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's own parameter names
        if not str(host).endswith(".example"):
            return real(host, port, family, type, proto, flags)
        asked.append(host)
        queue = answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]  # the last answer repeats
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (address, port) if ":" not in address else (address, port, 0, 0)) for address in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    class Resolver:
        def answer(self, name: str, *answers_in_order: list[str]) -> None:
            answers[name] = list(answers_in_order)

        def asked(self, name: str) -> int:
            return asked.count(name)

    return Resolver()


def guarded(base_url: str | None = None, **guard_options):
    guard_options.setdefault("schemes", {"http", "https"})
    return http_client(f"guarded-{uuid.uuid4().hex[:6]}", base_url=base_url, timeout=(2, 5), retry=None,
                       url_guard=UrlGuard(**guard_options))


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/", "https://127.1.2.3/", "https://[::1]/", "https://10.1.2.3/", "https://172.16.0.1/",
    "https://192.168.1.1/", "https://169.254.169.254/latest/meta-data/", "https://[fd00::1]/",
    "https://[fe80::1]/", "https://224.0.0.1/", "https://[ff02::1]/", "https://0.0.0.0/", "https://[::]/",
    "https://240.0.0.1/", "https://100.64.0.1/", "https://[::ffff:127.0.0.1]/", "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:10.0.0.1]/", "https://[2002:7f00:1::]/", "https://[64:ff9b::a9fe:a9fe]/",
])
def test_a_guarded_client_refuses_non_public_addresses(url):
    session = guarded()

    with pytest.raises(UrlRefused, match="resolves to a"):
        session.get(url)

    assert sample(metrics.HTTP_ERRORS, {"client": session.name, "host": "other", "error": "refused"}, "_total") == 1


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.0.0.1", "private"), ("192.168.0.1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fc00::1", "private"),
    ("224.0.0.251", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("255.255.255.255", "private"), ("240.0.0.1", "private"), ("100.64.0.1", "not globally routable"),
    ("fec0::1", "site-local"), ("::ffff:192.168.0.1", "private"), ("2002:a9fe:a9fe::1", "link-local"),
    ("64:ff9b::7f00:1", "loopback"), ("::7f00:1", "reserved"), ("2001:db8::1", "private"),
    ("93.184.216.34", None), ("2606:4700:4700::1111", None), ("::ffff:93.184.216.34", None),
])
def test_address_refusal_names_why_an_address_is_not_public(address, reason):
    assert address_refusal(ipaddress.ip_address(address)) == reason


def test_a_name_resolving_to_loopback_is_refused_after_resolution(server):
    with pytest.raises(UrlRefused, match=r"'localhost'.*loopback"):
        guarded().get(f"http://localhost:{server.port}/r")

    assert server.seen == []


@pytest.mark.parametrize(("name", "addresses"), [
    ("internal.example", ["10.0.0.5"]),
    ("metadata.example", ["169.254.169.254"]),
    ("mapped.example", ["::ffff:10.0.0.1"]),
    ("mixed.example", ["93.184.216.34", "10.0.0.5"]),  # one public answer does not excuse a private one
])
def test_a_name_resolving_to_a_non_public_address_is_refused(resolver, name, addresses):
    resolver.answer(name, addresses)

    with pytest.raises(UrlRefused, match="resolves to a") as refused:
        guarded().get(f"https://{name}/hook")

    assert addresses[-1] not in str(refused.value)  # whoever supplied the URL learns no internal address


def test_an_allowed_network_reaches_the_server_with_the_urls_host(server, resolver):
    resolver.answer("hooks.example", ["127.0.0.1"])

    response = guarded(allowed_networks=LOOPBACK_ONLY).get(f"http://hooks.example:{server.port}/r")

    assert response.status_code == 200
    (seen,) = server.requests_to("/r")
    assert seen.headers["Host"] == f"hooks.example:{server.port}"


def test_the_connection_goes_to_the_address_that_was_vetted(server, resolver):
    # A rebinding name: vetted as 127.0.0.1 (allowed here), then answering 127.0.0.2 (not allowed).
    # Checking and then resolving again to connect would reach the second answer.
    resolver.answer("rebind.example", ["127.0.0.1"], ["127.0.0.2"])

    response = guarded(allowed_networks=LOOPBACK_ONLY).get(f"http://rebind.example:{server.port}/r")

    assert response.status_code == 200 and len(server.requests_to("/r")) == 1
    assert resolver.asked("rebind.example") == 1


def test_https_only_unless_the_setting_allows_http(server):
    with pytest.raises(UrlRefused, match="allows https only"):
        http_client("g", base_url=None, timeout=2, retry=None,
                    url_guard=UrlGuard.from_settings(allowed_networks=LOOPBACK_ONLY)).get(server.url("/r"))

    with override_settings(HTTP_GUARD_ALLOW_HTTP=True, HTTP_GUARD_ALLOWED_NETWORKS=list(LOOPBACK_ONLY)):
        guard = UrlGuard.from_settings()
    assert http_client("g", base_url=None, timeout=2, retry=None, url_guard=guard).get(server.url("/r")).ok
    with pytest.raises(UrlRefused, match="allows http, https only"):
        http_client("g", base_url=None, timeout=2, retry=None, url_guard=guard).get("ftp://127.0.0.1/")


def test_the_host_allow_list_refuses_other_hosts_before_resolving(server, resolver):
    resolver.answer("api.partner.example", ["127.0.0.1"])
    session = guarded(allowed_hosts=("*.partner.example",), allowed_networks=LOOPBACK_ONLY)

    assert session.get(f"http://api.partner.example:{server.port}/r").status_code == 200
    for url in ("http://partner.example/", "http://evilpartner.example/", f"http://localhost:{server.port}/"):
        with pytest.raises(UrlRefused, match="allow-list"):
            session.get(url)
    assert resolver.asked("evilpartner.example") == 0
    # Allowed hosts get a metric label of their own (their pattern); the rest share "other".
    assert sample(metrics.HTTP_REQUESTS, {"client": session.name, "host": "*.partner.example",
                                          "status_class": "2xx"}, "_total") == 1


def test_redirects_are_not_followed_unless_asked(server):
    server.script("/r", Reply(302, {"Location": "/elsewhere"}))

    response = guarded(allowed_networks=LOOPBACK_ONLY).get(server.url("/r"))

    assert response.status_code == 302
    assert [seen.path for seen in server.seen] == ["/r"]


@pytest.mark.parametrize(("target", "allowed_hosts"), [
    ("http://127.0.0.2:{port}/loopback", ()),  # loopback, but not the allowed 127.0.0.1
    ("http://loopback.example:{port}/by-name", ()),  # a name resolving to loopback
    ("http://internal.example/private", ()),  # a name resolving to a private address
    ("http://localhost:{port}/off-the-list", ("127.0.0.1",)),  # a host off the allow-list
])
def test_a_followed_redirect_to_a_refused_url_is_refused(server, resolver, target, allowed_hosts):
    resolver.answer("loopback.example", ["127.0.0.2"])
    resolver.answer("internal.example", ["10.0.0.5"])
    server.script("/r", Reply(302, {"Location": target.format(port=server.port)}))
    session = guarded(allowed_networks=LOOPBACK_ONLY, allowed_hosts=allowed_hosts)

    with pytest.raises(UrlRefused):
        session.get(server.url("/r"), allow_redirects=True)

    assert [seen.path for seen in server.seen] == ["/r"]


def test_a_followed_redirect_to_an_allowed_url_is_followed(server):
    server.script("/r", Reply(302, {"Location": "/final"}))

    response = guarded(allowed_networks=LOOPBACK_ONLY).get(server.url("/r"), allow_redirects=True)

    assert response.status_code == 200 and [seen.path for seen in server.seen] == ["/r", "/final"]


def test_the_size_cap_also_bounds_a_redirect_hops_body(server):
    server.script("/r", Reply(302, {"Location": "/final"}, body=b"x" * 200_000, chunked=True))
    session = http_client("g", base_url=None, timeout=2, retry=None, max_response_bytes=1000,
                          url_guard=UrlGuard(schemes={"http"}, allowed_networks=LOOPBACK_ONLY))

    with pytest.raises(ResponseTooLarge):
        session.get(server.url("/r"), allow_redirects=True)


def test_proxies_are_refused_and_the_environments_ignored(server, monkeypatch):
    session = guarded(allowed_networks=LOOPBACK_ONLY)

    with pytest.raises(UrlRefused, match="proxies"):
        session.get(server.url("/r"), proxies={"http": "http://127.0.0.1:9"})
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a proxy would resolve the host unchecked
    assert session.get(server.url("/r")).status_code == 200
    assert len(server.requests_to("/r")) == 1
