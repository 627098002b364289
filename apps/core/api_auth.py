"""DRF authentication with `Authorization: Bearer <api key>`."""

from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from apps.core.api_keys import api_key_authenticate


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticate a request by API key; answers 401 with a Bearer challenge when missing."""

    keyword = "Bearer"

    def authenticate(self, request: Request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header; use 'Bearer <api key>'.")
        try:
            raw_key = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid API key.") from exc
        # A request may be authenticated twice (the idempotency middleware runs the view's checks before
        # the view does): the key is looked up once per request.
        cached = getattr(request._request, "taskplane_api_key_auth", None)
        result = cached[1] if cached and cached[0] == raw_key else api_key_authenticate(raw_key=raw_key)
        if result is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        request._request.taskplane_api_key_auth = (raw_key, result)
        return result

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'
