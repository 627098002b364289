"""Request id binding and the guarantee that every error under /api/ is problem+json."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.signals import got_request_exception, request_finished
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.urls import is_valid_path
from django.utils.http import escape_leading_slashes

from apps.core.problems import (
    PRESERVED_HEADERS,
    PROBLEM_CONTENT_TYPE,
    dependency_unavailable_response,
    problem_body,
    problem_response,
)
from apps.core.request_context import set_request_id

REQUEST_ID_HEADER = "X-Request-ID"
# Accept caller ids that are safe to log and echo; anything else is replaced, not trusted.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
API_PREFIX = "/api/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


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


def _remember_exception(sender, request=None, **kwargs) -> None:
    # Sent by Django while it turns an uncaught exception into a 500 page; ApiProblemMiddleware reads it.
    if request is not None:
        request.taskplane_exception = sys.exc_info()[1]


got_request_exception.connect(_remember_exception, dispatch_uid="taskplane-remember-request-exception")


class ApiProblemMiddleware:
    """Rewrite any non-problem error response under /api/ (404 from routing, CSRF, 500 pages).

    DRF views already answer with problems through the exception handler; this catches what
    happens outside them, so no HTML error page or stack trace ever reaches an API client. It also
    answers an unsafe request to an API URL without its trailing slash (see ``_slash_redirect``).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX) and request.method not in SAFE_METHODS:
            redirect = _slash_redirect(request)
            if redirect is not None:
                return redirect
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(API_PREFIX)
            and not response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)
        ):
            # Django logged the error it answered ("Internal Server Error: ..." with the traceback);
            # the problem is the same error in another format, not a second one to log.
            logged = getattr(response, "_has_been_logged", False)
            problem = None
            if response.status_code == 500:
                problem = dependency_unavailable_response(getattr(request, "taskplane_exception", None), request,
                                                          logged=logged)
            if problem is None:
                headers = {name: response[name] for name in PRESERVED_HEADERS if response.has_header(name)}
                problem = problem_response(status=response.status_code, request=request, headers=headers)
            problem._has_been_logged = logged or getattr(problem, "_has_been_logged", False)
            return problem
        return response


def _slash_redirect(request: HttpRequest) -> HttpResponse | None:
    """A 308 to the slash URL for an unsafe request to an API URL that exists only with a trailing slash.

    CommonMiddleware answers 301 (or, with DEBUG, raises a RuntimeError: a 500), and clients follow a
    301 with a GET that drops the body. A 308 tells them to repeat the same request at the new URL;
    nothing ran here, so repeating it is safe.
    """
    if not settings.APPEND_SLASH or request.path_info.endswith("/"):
        return None
    urlconf = getattr(request, "urlconf", None)
    if is_valid_path(request.path_info, urlconf) or not is_valid_path(f"{request.path_info}/", urlconf):
        return None
    location = escape_leading_slashes(request.get_full_path(force_append_slash=True))
    redirect = HttpResponsePermanentRedirect(location, preserve_request=True, content_type=PROBLEM_CONTENT_TYPE)
    redirect.content = json.dumps(problem_body(
        status=308, title="Permanent Redirect", instance=request.path, request_id=request.request_id,
        detail=f"This URL ends with a slash: repeat the {request.method} request at {location}.",
    ))
    return redirect
