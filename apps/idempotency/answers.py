"""What the idempotency middleware keeps of a view's answer, how it replays it, and its own problem answers."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from apps.core.problems import PROBLEM_CONTENT_TYPE, problem_response
from apps.core.resilience.errors import LockLost, LockNotAcquired
from apps.idempotency.keys import HEADER
from apps.idempotency.models import IdempotencyRecord
from apps.idempotency.records import record_body

URN = "urn:taskplane:problem:idempotency-key-"
# Refused before the view's work (authentication, permissions, throttling): retrying is right.
REFUSED_STATUSES = frozenset({401, 403, 429})
# The resilience kit's lock conflicts: the same request may well succeed a moment later.
RETRY_LATER_TYPES = frozenset(f"urn:taskplane:problem:{error.slug}" for error in (LockNotAcquired, LockLost))
# Allow is required on a replayed 405 (RFC 9110 §15.5.6); Vary keeps caches honest.
KEPT_HEADERS = ("Content-Type", "Location", "Allow", "Vary")


@dataclass(frozen=True)
class Keeping:
    """What becomes of a view's answer."""

    stored: HttpResponse | None  # what a retry gets back; None releases the key, so a retry runs
    rollback: bool  # roll the view's writes back
    not_stored: str | None = None  # why the answer itself is not stored: "status", "too-large", "streaming"


def response_keeping(*, request: HttpRequest, response: HttpResponse) -> Keeping:
    """Keep final answers; release "retry later" ones; keep a "result not kept" note for the unstorable."""
    if _retry_is_right(response):
        return Keeping(None, rollback=True, not_stored="status")
    # DRF answered an exception: roll the view's writes back, as ATOMIC_REQUESTS would (set_rollback).
    rollback = bool(getattr(response, "exception", False))
    if getattr(response, "streaming", False):
        return Keeping(_result_not_kept(request, response, "streamed"), rollback=rollback, not_stored="streaming")
    if len(response.content) > settings.IDEMPOTENCY_MAX_RESPONSE_BYTES:
        return Keeping(_result_not_kept(request, response, "too large to keep"), rollback=rollback,
                       not_stored="too-large")
    return Keeping(response, rollback=rollback)


def kept_headers(response: HttpResponse) -> dict[str, str]:
    """The headers of ``response`` that are stored and replayed."""
    names = (*KEPT_HEADERS, *settings.IDEMPOTENCY_STORED_HEADERS)
    return {name: response[name] for name in names if response.has_header(name)}


def replay(record: IdempotencyRecord) -> HttpResponse:
    """The stored answer, with exactly the stored headers, marked as a replay."""
    response = HttpResponse(record_body(record), status=record.response_status)
    del response["Content-Type"]  # HttpResponse's default; a stored 204 has none
    for name, value in record.response_headers.items():
        response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response


def idempotency_problem(*, request: HttpRequest, status: int, slug: str, title: str, detail: str,
                        retry_after: bool = False) -> HttpResponse:
    """One of the middleware's own problem answers (type ``urn:taskplane:problem:idempotency-key-<slug>``)."""
    return problem_response(status=status, request=request, title=title, detail=detail, type_uri=URN + slug,
                            headers={"Retry-After": "1"} if retry_after else None)


def _retry_is_right(response: HttpResponse) -> bool:
    status = response.status_code
    if status in REFUSED_STATUSES or status >= 500 or (status >= 400 and response.has_header("Retry-After")):
        return True
    if status != 409 or response.get("Content-Type") != PROBLEM_CONTENT_TYPE:
        return False
    try:
        return json.loads(response.content).get("type") in RETRY_LATER_TYPES
    except (ValueError, AttributeError):
        return False


def _result_not_kept(request: HttpRequest, response: HttpResponse, why: str) -> HttpResponse:
    return idempotency_problem(
        request=request, status=409, slug="result-not-kept", title="Result not kept",
        detail=(f"The request with this {HEADER} ran and answered {response.status_code}, but its response was "
                f"{why}, so it was not stored. It will not run again: read the resource to see its result."))
