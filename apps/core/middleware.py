"""Request id binding and the guarantee that every error under /api/ is problem+json."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

from apps.core.problems import PRESERVED_HEADERS, PROBLEM_CONTENT_TYPE, problem_response
from apps.core.request_context import set_request_id

REQUEST_ID_HEADER = "X-Request-ID"
# Accept caller ids that are safe to log and echo; anything else is replaced, not trusted.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
API_PREFIX = "/api/"


class RequestIdMiddleware:
    """Accept or generate X-Request-ID, bind it for logs and echo it on the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = offered if _VALID_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        # Left bound until request_finished: Django logs the response ("Not Found: …") after the
        # middleware chain has returned, and that line must carry the id too.
        set_request_id(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _clear_request_id(**kwargs) -> None:
    set_request_id(None)


request_finished.connect(_clear_request_id, dispatch_uid="taskplane-clear-request-id")


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
