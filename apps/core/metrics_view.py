"""/metrics: Prometheus exposition, open in local runs and restricted in production."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# Collectors that read shared state (the database) rather than this process's counters. The
# multi-process registry below is built per scrape, so they are added to it explicitly.
_state_collectors: list[Collector] = []


def expose_in_multiprocess_mode(collector: Collector) -> None:
    """Also serve ``collector`` (already on the global registry) when PROMETHEUS_MULTIPROC_DIR is set."""
    if collector not in _state_collectors:
        _state_collectors.append(collector)


def _registry() -> CollectorRegistry:
    if not settings.PROMETHEUS_MULTIPROC_DIR:
        return REGISTRY
    # Several processes share the metrics directory; gather theirs, then add the state collectors.
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    for collector in _state_collectors:
        registry.register(collector)
    return registry


def _authorised(request: HttpRequest) -> bool:
    if settings.METRICS_PUBLIC:
        return True
    token = settings.METRICS_TOKEN
    offered = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve Prometheus metrics to an allowed network or a holder of METRICS_TOKEN."""
    if not _authorised(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
