"""/metrics: Prometheus exposition, open in local runs and restricted in production."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django_prometheus.exports import ExportToDjangoView


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
    return ExportToDjangoView(request)
