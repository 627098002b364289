"""Request id binding and the guarantee that every error under /api/ is problem+json."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.core.problems import PRESERVED_HEADERS, PROBLEM_CONTENT_TYPE, problem_response
from apps.core.request_context import reset_request_id, set_request_id

REQUEST_ID_HEADER = "X-Request-ID"
# Accept caller ids that are safe to log and echo; anything else is replaced, not trusted.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
API_PREFIX = "/api/"


class RequestIdMiddleware:
    """Accept or generate X-Request-ID, bind it for logs and echo it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = offered if _VALID_REQUEST_ID.match(offered) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = set_request_id(request_id)
        try:
            response = self.get_response(request)
        finally:
            reset_request_id(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


class ApiProblemMiddleware:
    """Rewrite any non-problem error response under /api/ (404 from routing, CSRF, 500 pages).

    DRF views already answer with problems through the exception handler; this catches what
    happens outside them, so no HTML error page or stack trace ever reaches an API client.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(API_PREFIX)
            and not response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)
        ):
            headers = {name: response[name] for name in PRESERVED_HEADERS if response.has_header(name)}
            return problem_response(status=response.status_code, request=request, headers=headers)
        return response
