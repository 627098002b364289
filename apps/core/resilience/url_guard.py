"""The URL guard: what a client that fetches user-supplied URLs (webhooks) may connect to.

A guarded client refuses schemes and hosts outside its allow-lists, and refuses every address that
is not public unicast (loopback, private, link-local and the cloud metadata address, multicast,
reserved, unspecified, and the IPv6 forms embedding one of those) AFTER DNS resolution. The check
runs inside the connection itself: the name is resolved once, every address is vetted, and the
socket is opened to a vetted address, so a DNS answer that changes between check and connect
(rebinding) changes nothing. TLS still verifies, and SNI still names, the URL's host.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

logger = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The NAT64 well-known prefix (RFC 6052) reaches the IPv4 address in its last 32 bits; ipaddress
# has no property that unwraps it, unlike ipv4_mapped and sixtofour.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UrlRefused(requests.RequestException):
    """The URL guard refused the URL, a redirect target, or the address a host resolves to."""


class _AddressRefused(Exception):
    # Raised inside urllib3's connect: an OSError there would be wrapped into a ConnectionError,
    # retried and counted against the breaker. The session turns it into UrlRefused.
    pass


def address_refusal(address: Address) -> str | None:
    """Why ``address`` is not a public unicast address ("loopback", "private", ...), or None when it is."""
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is the IPv4 address itself, written for an IPv6 socket.
            candidates = [address.ipv4_mapped]
        else:
            # 6to4 and NAT64 addresses are routed on to the IPv4 address they embed: both must pass.
            embedded = address.sixtofour
            if embedded is None and address in _NAT64:
                embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            if embedded is not None:
                candidates.insert(0, embedded)
    for candidate in candidates:
        # Order matters only for the message: the most specific reason first.
        for reason, refused in (
            ("unspecified", candidate.is_unspecified), ("loopback", candidate.is_loopback),
            ("link-local", candidate.is_link_local), ("multicast", candidate.is_multicast),
            ("private", candidate.is_private), ("reserved", candidate.is_reserved),
            ("site-local", getattr(candidate, "is_site_local", False)),
            ("not globally routable", not candidate.is_global),  # e.g. 100.64.0.0/10 (carrier-grade NAT)
        ):
            if refused:
                return reason
    return None


@dataclass(frozen=True)
class UrlGuard:
    """Allow-lists for schemes, hosts and (exceptionally) non-public networks; see docs/resilience.md."""

    schemes: frozenset[str] = frozenset({"https"})
    # Empty: any host whose addresses are public. Otherwise exact names, or "*.example.com" for subdomains.
    allowed_hosts: tuple[str, ...] = ()
    # Non-public networks allowed all the same (development, tests): e.g. ("127.0.0.1/32",).
    allowed_networks: tuple[Network, ...] = field(default=())
    max_redirects: int = 5  # only when a caller turns redirects on; every hop is vetted

    def __post_init__(self) -> None:
        object.__setattr__(self, "schemes", frozenset(scheme.lower() for scheme in self.schemes))
        object.__setattr__(self, "allowed_hosts", tuple(host.lower().rstrip(".") for host in self.allowed_hosts))
        object.__setattr__(self, "allowed_networks",
                           tuple(ipaddress.ip_network(network) for network in self.allowed_networks))

    @classmethod
    def from_settings(cls, **overrides: Any) -> UrlGuard:
        """https only (plus http when HTTP_GUARD_ALLOW_HTTP), HTTP_GUARD_ALLOWED_NETWORKS, plus keyword overrides."""
        from django.conf import settings

        base = cls(schemes=frozenset({"https", "http"} if settings.HTTP_GUARD_ALLOW_HTTP else {"https"}),
                   allowed_networks=tuple(settings.HTTP_GUARD_ALLOWED_NETWORKS))
        return replace(base, **overrides)

    def host_entry(self, hostname: str) -> str | None:
        """The allow-list entry ``hostname`` matches (the host itself or its "*." pattern), or None."""
        hostname = hostname.lower().rstrip(".")
        for entry in self.allowed_hosts:
            if entry == hostname or (entry.startswith("*.") and hostname.endswith(entry[1:])):
                return entry
        return None

    def check_url(self, url: str) -> None:
        """Raise UrlRefused unless the URL's scheme and host are allowed (addresses are vetted at connect)."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError as exc:
            raise UrlRefused(f"Refused a malformed URL: {exc}.") from None
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            raise UrlRefused(f"Refused a {scheme or 'scheme-less'} URL: this client allows "
                             f"{', '.join(sorted(self.schemes))} only.")
        hostname = parts.hostname
        if not hostname:
            raise UrlRefused("Refused a URL without a host.")
        if self.allowed_hosts and self.host_entry(hostname) is None:
            raise UrlRefused(f"Refused host {hostname!r}: it is not on this client's allow-list.")
        try:
            literal = ipaddress.ip_address(hostname.split("%", 1)[0])
        except ValueError:
            return  # a name: its addresses are vetted when the connection opens
        self._vet(hostname, [literal])

    def check_resolved(self, url: str) -> None:
        """``check_url``, then resolve the host now and vet its addresses: for refusing a URL when it is saved.

        The connection vets again (DNS can change); this only lets a caller say no before storing the URL.
        """
        self.check_url(url)
        parts = urlsplit(url)
        try:
            self.vetted_addresses(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        except _AddressRefused as exc:
            raise UrlRefused(str(exc)) from None
        except OSError:
            raise UrlRefused(f"Refused host {parts.hostname!r}: it does not resolve.") from None

    def vetted_addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and return its addresses; raise when any is not allowed."""
        host = host.strip("[]")
        infos = socket.getaddrinfo(host, port, urllib3_connection.allowed_gai_family(), socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        try:
            self._vet(host, [ipaddress.ip_address(address.split("%", 1)[0]) for address in addresses])
        except UrlRefused as exc:
            raise _AddressRefused(str(exc)) from None
        return addresses

    def _vet(self, host: str, addresses: Iterable[Address]) -> None:
        for address in addresses:
            if any(address in network for network in self.allowed_networks):
                continue
            reason = address_refusal(address)
            if reason is not None:
                logger.warning("URL guard refused %s: it resolves to %s (%s)", host, address, reason,
                               extra={"url_guard_host": host, "url_guard_reason": reason})
                # The message leaves out the address: it may reach whoever supplied the URL.
                raise UrlRefused(f"Refused host {host!r}: it resolves to a {reason} address.")


class _VettedConnect:
    """Open the socket to an address the guard vetted, never to a second DNS answer."""

    url_guard: UrlGuard

    def _new_conn(self) -> socket.socket:
        try:
            addresses = self.url_guard.vetted_addresses(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        error: OSError | None = None
        for address in addresses:
            try:
                sock = urllib3_connection.create_connection(
                    (address, self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:  # this address failed: try the next vetted one, as urllib3 does
                error = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        if isinstance(error, TimeoutError):
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections are opened through ``guard``; proxies are refused."""

    def __init__(self, guard: UrlGuard, **kwargs: Any) -> None:
        self.url_guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        attributes = {"url_guard": self.url_guard}
        http = type("GuardedHTTPConnection", (_VettedConnect, HTTPConnection), attributes)
        https = type("GuardedHTTPSConnection", (_VettedConnect, HTTPSConnection), attributes)
        # A new dict: the pool manager's default is urllib3's module-level mapping.
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise UrlRefused("A guarded client does not use proxies: the proxy would resolve the host unchecked.")
