"""RFC 9457 problem details: one builder, one DRF exception handler, used for every API error."""

from __future__ import annotations

import json
import logging
import math
from http import HTTPStatus
from typing import Any

import redis.exceptions
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.views import set_rollback

from apps.core.errors import TaskplaneError
from apps.core.request_context import get_request_id

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Headers of an error response that carry meaning for the client and must survive conversion.
PRESERVED_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "X-Request-ID")
QUOTE_REQUEST_ID = "Quote the request_id when reporting it."
UNEXPECTED_ERROR = f"An unexpected error occurred. {QUOTE_REQUEST_ID}"
# The database or the shared cache went away (restart, failover, network): retrying soon is right, and
# it is not a bug in the view, so it is a 503 with Retry-After rather than a 500.
DEPENDENCY_ERRORS = (OperationalError, InterfaceError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
DEPENDENCY_RETRY_AFTER_SECONDS = 5


def problem_response(
    *,
    status: int,
    request: HttpRequest | None,
    detail: str | None = None,
    title: str | None = None,
    type_uri: str = "about:blank",
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """Build an ``application/problem+json`` response."""
    body = problem_body(status=status, detail=detail, title=title, type_uri=type_uri, errors=errors,
                        instance=request.path if request is not None else None, request_id=get_request_id())
    response = HttpResponse(json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def problem_body(
    *,
    status: int,
    detail: str | None = None,
    title: str | None = None,
    type_uri: str = "about:blank",
    errors: list[dict[str, str]] | None = None,
    instance: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The problem document itself; a 500's ``detail`` always asks to quote the request id."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    if status == 500:
        detail = UNEXPECTED_ERROR if not detail or detail == phrase else detail
        if QUOTE_REQUEST_ID not in detail:
            detail = f"{detail.rstrip('. ')}. {QUOTE_REQUEST_ID}"
    body: dict[str, Any] = {
        "type": type_uri,
        "title": title or phrase,
        "status": status,
        "detail": detail or phrase,
        "instance": instance,
        "request_id": request_id,
    }
    if errors:
        body["errors"] = errors
    return body


def dependency_unavailable_response(exc: BaseException | None, request: HttpRequest | None, *,
                                    logged: bool = False) -> HttpResponse | None:
    """A 503 problem if ``exc`` says the database or the shared cache is unavailable, else None.

    ``logged``: Django already logged the exception (with its traceback); it is not logged again.
    """
    if not isinstance(exc, DEPENDENCY_ERRORS):
        return None
    if not logged:
        logger.error("Dependency unavailable during request: %s: %s", type(exc).__name__, exc,
                     extra=_log_extra(request, status=503))
    return mark_logged(problem_response(
        status=503, request=request, title="Service unavailable",
        type_uri="urn:taskplane:problem:dependency-unavailable",
        detail="A service the API depends on is unavailable; retry later.",
        headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
    ))


def mark_logged(response: HttpResponse) -> HttpResponse:
    """Tell Django the response's error was logged already, so django.request does not log it a second time."""
    response._has_been_logged = True  # read by django.utils.log.log_response
    return response


def field_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested validation detail into [{field, message, code}]."""
    if isinstance(detail, dict):
        flattened: list[dict[str, str]] = []
        for key, value in detail.items():
            if isinstance(key, int):
                field = f"{prefix}[{key}]"  # DRF keys list-item errors by index; a name of digits is a name
            elif key == "non_field_errors" and prefix:
                field = prefix
            else:
                field = f"{prefix}.{key}" if prefix else str(key)
            flattened.extend(field_errors(value, field))
        return flattened
    if isinstance(detail, list):
        flattened = []
        for index, item in enumerate(detail):
            nested = isinstance(item, (dict, list))
            flattened.extend(field_errors(item, f"{prefix}[{index}]" if nested else prefix))
        return flattened
    return [{"field": prefix or "non_field_errors", "message": str(detail), "code": getattr(detail, "code", "invalid")}]


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, RequestDataTooBig):
        too_large = exceptions.APIException("The request body is too large.")
        too_large.status_code = 413
        return too_large
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    return exc


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """DRF EXCEPTION_HANDLER: every exception raised in an API view becomes a problem response."""
    request = context.get("request")
    set_rollback()
    if isinstance(exc, TaskplaneError):
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
        response = problem_response(
            status=exc.status, request=request, title=exc.title, detail=exc.detail,
            type_uri=exc.type_uri, errors=exc.errors, headers=headers,
        )
        if exc.status == 500:  # a 503 (dependency down) is expected operation; a 500 is a bug to look at
            logger.exception("Server-side error in API view: %s", exc.detail, extra=_log_extra(request))
            mark_logged(response)
        return response
    exc = _translate(exc)
    if not isinstance(exc, exceptions.APIException):
        unavailable = dependency_unavailable_response(exc, request)
        if unavailable is not None:
            return unavailable
        logger.exception("Unhandled error in API view", extra=_log_extra(request))
        return mark_logged(problem_response(status=500, request=request, detail=UNEXPECTED_ERROR))
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    if isinstance(exc, exceptions.ValidationError):
        return problem_response(
            status=exc.status_code, request=request, title="Validation failed",
            detail="The request has invalid fields; see errors.",
            type_uri="urn:taskplane:problem:validation-error",
            errors=field_errors(exc.detail), headers=headers,
        )
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return problem_response(status=exc.status_code, request=request, detail=str(detail), headers=headers)


def _log_extra(request: HttpRequest | None, status: int = 500) -> dict[str, Any]:
    # The fields django.request puts on its own line for a 5xx, which this line replaces.
    return {"status_code": status, "request": getattr(request, "_request", request)}
