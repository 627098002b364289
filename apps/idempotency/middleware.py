"""IdempotencyMiddleware: unsafe /api/ calls with an Idempotency-Key run once; retries replay.

Semantics follow draft-ietf-httpapi-idempotency-key-header, and Stripe's behaviour where the draft is
silent. It runs the view itself (from process_view, so only resolved routes are covered) inside
one transaction with the record's completion, which is what makes a crash after commit safe.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from apps.core.errors import InvalidInput
from apps.core.middleware import API_PREFIX
from apps.core.problems import problem_response
from apps.idempotency import metrics
from apps.idempotency.answers import Keeping, idempotency_problem, kept_headers, replay, response_keeping
from apps.idempotency.keys import HEADER, fingerprint, parse_key, scope_hash
from apps.idempotency.principal import principal_id, principal_preflight
from apps.idempotency.records import Claim, LostOwnership, record_claim, record_complete, record_release

logger = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
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
        if raw is None and not self._required(request, view_func):
            return None
        # Authentication and permissions first: a caller the view refuses learns nothing about the key.
        preflight = principal_preflight(request=request, view_func=view_func, view_args=view_args,
                                        view_kwargs=view_kwargs)
        if preflight.refusal is not None:
            return preflight.refusal
        if raw is None:
            return idempotency_problem(request=request, status=400, slug="required", title="Idempotency-Key required",
                                       detail=f"This operation requires an {HEADER} header.")
        try:
            key = parse_key(raw)
        except InvalidInput as exc:
            return idempotency_problem(request=request, status=400, slug="malformed", title="Malformed Idempotency-Key",
                                       detail=exc.detail)
        if preflight.user_id is None:
            return None  # a view open to anonymous callers: nobody to scope the key to, so it is not tracked
        scope = scope_hash(principal=f"user:{preflight.user_id}", method=request.method, path=request.path, key=key)
        try:
            claim = self._claim(request, scope=scope, user_id=preflight.user_id, key=key)
        except RequestDataTooBig:
            return problem_response(status=413, request=request, detail="The request body is too large.")
        if claim.outcome == "owned":
            response = self._execute(request, view_func, view_args, view_kwargs, scope=scope, claim=claim,
                                     user_id=preflight.user_id)
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
            return replay(claim.record)
        if claim.outcome == "mismatch":
            metrics.KEYED_REQUESTS.labels("mismatch").inc()
            return idempotency_problem(
                request=request, status=422, slug="reused", title="Idempotency-Key reused",
                detail=f"This {HEADER} was used for a different request (method, path, query or body differ).")
        metrics.KEYED_REQUESTS.labels("conflict").inc()
        return idempotency_problem(
            request=request, status=409, slug="in-flight", title="Request in progress", retry_after=True,
            detail=f"A request with this {HEADER} is still being processed; retry later.")

    def _execute(self, request, view_func, view_args, view_kwargs, *, scope: str, claim: Claim,
                 user_id: int) -> HttpResponse:
        try:
            with transaction.atomic():
                response = view_func(request, *view_args, **view_kwargs)
                if callable(getattr(response, "render", None)):
                    response = response.render()
                keeping = response_keeping(request=request, response=response)
                if keeping.stored is not None and principal_id(request) != user_id:
                    # The view authenticated someone else: keeping its answer under the principal that
                    # claimed the key could replay one user's response to another.
                    keeping = PRINCIPAL_CHANGED
                if keeping.rollback:
                    transaction.set_rollback(True)
                else:
                    _settle(scope=scope, claim=claim, stored=keeping.stored)
            if keeping.rollback:  # the view's writes are gone; settle the claim on its own
                _settle(scope=scope, claim=claim, stored=keeping.stored)
        except LostOwnership:
            metrics.KEYED_REQUESTS.labels("lost_ownership").inc()
            return idempotency_problem(
                request=request, status=409, slug="superseded", title="Request superseded", retry_after=True,
                detail="A retry took over this request after its lease expired; its result is the one kept.")
        except BaseException:
            record_release(scope=scope, token=claim.token)
            raise
        if keeping is PRINCIPAL_CHANGED:
            logger.warning("A view authenticated another principal than the one that claimed its %s", HEADER)
            metrics.KEYED_REQUESTS.labels("principal_changed").inc()
            return idempotency_problem(
                request=request, status=409, slug="principal-changed", title="Principal changed", retry_after=True,
                detail="The view authenticated someone else than the caller the key was claimed for; nothing was "
                       "done. Retry the request.")
        metrics.KEYED_REQUESTS.labels("executed" if keeping.not_stored is None else "not_stored").inc()
        if keeping.not_stored not in (None, "status"):
            response[STATUS_HEADER] = f"not-stored; reason={keeping.not_stored}"
        return response


PRINCIPAL_CHANGED = Keeping(None, rollback=True, not_stored="principal-changed")


def _settle(*, scope: str, claim: Claim, stored: HttpResponse | None) -> None:
    """Store what a retry gets back, or release the key so that a retry runs."""
    if stored is None:
        record_release(scope=scope, token=claim.token)
    else:
        record_complete(scope=scope, token=claim.token, response=stored, headers=kept_headers(stored))
