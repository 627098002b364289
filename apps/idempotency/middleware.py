"""IdempotencyMiddleware: unsafe /api/ calls with an Idempotency-Key run once; retries replay.

Semantics follow draft-ietf-httpapi-idempotency-key-header, and Stripe's behaviour where the draft is
silent. It runs the view itself (from process_view, so only resolved routes are covered) inside
one transaction with the record's completion, which is what makes a crash after commit safe.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from apps.core.api_keys import api_key_authenticate
from apps.core.errors import InvalidInput
from apps.core.middleware import API_PREFIX
from apps.core.problems import problem_response
from apps.idempotency import metrics
from apps.idempotency.keys import HEADER, fingerprint, parse_key, scope_hash
from apps.idempotency.records import Claim, LostOwnership, record_body, record_claim, record_complete, record_release

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NOT_STORED_STATUSES = frozenset({401, 403, 429})  # answered before the view's work: retrying is right
STATUS_HEADER = "Idempotency-Key-Status"


def idempotency_required(view: Callable) -> Callable:
    """Mark a function view as requiring an Idempotency-Key (DRF views: set ``idempotency_required = True``)."""
    view.idempotency_required = True  # type: ignore[attr-defined]
    return view


class IdempotencyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.required_paths = [re.compile(pattern) for pattern in settings.IDEMPOTENCY_REQUIRED_PATHS]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.method not in UNSAFE_METHODS or not request.path.startswith(API_PREFIX):
            return None
        raw = request.headers.get(HEADER)
        if raw is None:
            if self._required(request, view_func):
                return problem_response(status=400, request=request, title="Idempotency-Key required",
                                        detail=f"This operation requires an {HEADER} header.",
                                        type_uri="urn:taskplane:problem:idempotency-key-required")
            return None
        try:
            key = parse_key(raw)
        except InvalidInput as exc:
            return problem_response(status=400, request=request, title="Malformed Idempotency-Key",
                                    detail=exc.detail, type_uri="urn:taskplane:problem:idempotency-key-malformed")
        principal = _principal(request)
        if principal is None:
            return None  # unauthenticated: the view answers 401 and nothing is stored
        scope = scope_hash(principal=f"user:{principal}", method=request.method, path=request.path, key=key)
        try:
            claim = self._claim(request, scope=scope, user_id=principal, key=key)
        except RequestDataTooBig:
            return problem_response(status=413, request=request, detail="The request body is too large.")
        if claim.outcome == "owned":
            response = self._execute(request, view_func, view_args, view_kwargs, scope=scope, claim=claim)
        else:
            response = self._answer_without_running(request, claim)
        response[HEADER] = raw
        return response

    def _required(self, request: HttpRequest, view_func: Callable) -> bool:
        view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
        if getattr(view_func, "idempotency_required", False) or getattr(view_class, "idempotency_required", False):
            return True
        return any(pattern.search(request.path) for pattern in self.required_paths)

    def _claim(self, request: HttpRequest, *, scope: str, user_id: int, key: str) -> Claim:
        attrs = {"scope": scope, "user_id": user_id, "key": key, "method": request.method, "path": request.path,
                 "fingerprint": fingerprint(request)}
        claim = record_claim(**attrs)
        deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_SECONDS
        while claim.outcome == "in_flight" and time.monotonic() < deadline:
            time.sleep(0.05)  # the first execution is still running: wait (bounded) to replay it
            claim = record_claim(**attrs)
        if claim.reclaimed:
            metrics.RECLAIMED.inc()
        return claim

    def _answer_without_running(self, request: HttpRequest, claim: Claim) -> HttpResponse:
        if claim.outcome == "replay":
            metrics.KEYED_REQUESTS.labels("replayed").inc()
            return _replay(claim)
        if claim.outcome == "mismatch":
            metrics.KEYED_REQUESTS.labels("mismatch").inc()
            return problem_response(
                status=422, request=request, title="Idempotency-Key reused",
                detail=f"This {HEADER} was used for a different request (method, path, query or body differ).",
                type_uri="urn:taskplane:problem:idempotency-key-reused")
        metrics.KEYED_REQUESTS.labels("conflict").inc()
        return problem_response(
            status=409, request=request, title="Request in progress",
            detail=f"A request with this {HEADER} is still being processed; retry later.",
            type_uri="urn:taskplane:problem:idempotency-key-in-flight", headers={"Retry-After": "1"})

    def _execute(self, request, view_func, view_args, view_kwargs, *, scope: str, claim: Claim) -> HttpResponse:
        try:
            with transaction.atomic():
                response = view_func(request, *view_args, **view_kwargs)
                if callable(getattr(response, "render", None)):
                    response = response.render()
                reason = _not_stored_reason(response)
                if reason is None:
                    record_complete(scope=scope, token=claim.token, response=response, headers=_kept_headers(response))
                else:
                    record_release(scope=scope, token=claim.token)
        except LostOwnership:
            metrics.KEYED_REQUESTS.labels("lost_ownership").inc()
            return problem_response(
                status=409, request=request, title="Request superseded",
                detail="A retry took over this request after its lease expired; its result is the one kept.",
                type_uri="urn:taskplane:problem:idempotency-key-superseded", headers={"Retry-After": "1"})
        except BaseException:
            with transaction.atomic():
                record_release(scope=scope, token=claim.token)
            raise
        metrics.KEYED_REQUESTS.labels("executed" if reason is None else "not_stored").inc()
        if reason is not None and reason != "status":
            response[STATUS_HEADER] = f"not-stored; reason={reason}"
        return response


def _principal(request: HttpRequest) -> int | None:
    """The id of the user the request acts for, decided as DRF will: a Bearer API key, else the session."""
    parts = request.headers.get("Authorization", "").split()
    if parts and parts[0].lower() == "bearer":
        result = api_key_authenticate(raw_key=parts[1]) if len(parts) == 2 else None
        if result is None:
            return None  # DRF rejects the request with 401 before the view runs
        request.taskplane_api_key_auth = (parts[1], result)  # reused by ApiKeyAuthentication
        return result[0].pk
    # Any other Authorization scheme is ignored by DRF, which then falls back to the session.
    user = getattr(request, "user", None)
    return user.pk if user is not None and user.is_authenticated else None


def _not_stored_reason(response: HttpResponse) -> str | None:
    if response.status_code in NOT_STORED_STATUSES:
        return "status"
    if getattr(response, "streaming", False):
        return "streaming"
    if len(response.content) > settings.IDEMPOTENCY_MAX_RESPONSE_BYTES:
        return "too-large"
    return None


def _kept_headers(response: HttpResponse) -> dict[str, str]:
    # Allow is required on a replayed 405 (RFC 9110 §15.5.6); Vary keeps caches honest.
    names = ("Content-Type", "Location", "Allow", "Vary", *settings.IDEMPOTENCY_STORED_HEADERS)
    return {name: response[name] for name in names if response.has_header(name)}


def _replay(claim: Claim) -> HttpResponse:
    record = claim.record
    response = HttpResponse(record_body(record), status=record.response_status)
    for name, value in record.response_headers.items():
        response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response
