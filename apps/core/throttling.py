"""Per-principal API throttling backed by the shared cache."""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from apps.core.models import ApiKey


class PrincipalRateThrottle(SimpleRateThrottle):
    """Limit each API key (or session user, or anonymous client address) to its configured rate."""

    scope = "principal"

    def get_rate(self) -> str:
        # Scope is chosen per request, and read live so a settings change applies without restart.
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def allow_request(self, request, view) -> bool:
        self.scope = "principal" if request.user and request.user.is_authenticated else "anonymous"
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str:
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"
