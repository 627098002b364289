"""Test-only API views (and a URLconf) that make the answers the idempotency middleware must tell apart.

Use with ``pytest.mark.urls("tests.apps.idempotency.views")``: the project's URLs plus
``/api/idem-test/<kind>/``. Every view first places an order (an Order row and an outbox row: the
"partial writes"), then answers as its kind says, through the real resilience kit where a kind
names one of its primitives.
"""

from __future__ import annotations

import threading

from django.contrib.auth import get_user_model
from django.http import StreamingHttpResponse
from django.urls import path
from rest_framework import status
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.resilience import BreakerPolicy, CircuitBreaker, DistributedBulkhead, DistributedLock
from apps.orders.services import order_place
from settings.urls import urlpatterns as project_urlpatterns

LOCK_NAME = "idem-test-lock"
BULKHEAD_NAME = "idem-test-bulkhead"
BREAKER = CircuitBreaker("idem-test-breaker", BreakerPolicy(failure_threshold=1, open_for=30.0))
BIG_BODY_BYTES = 4096
# A request with ``X-Test-Hold: 1`` to the "created" kind waits, after writing, until RELEASE is set.
ENTERED, RELEASE = threading.Event(), threading.Event()
HOLD_TIMEOUT = 60


def _place_order(request) -> int:
    return order_place(owner=request.user, sku="BOOK-1", quantity=1).pk  # a SKU of the seeded catalog


class WriteThenAnswerView(APIView):
    """Place an order, then answer as ``kind`` says."""

    def post(self, request, kind: str):
        order_id = _place_order(request)
        if kind == "created":
            if request.headers.get("X-Test-Hold"):
                ENTERED.set()
                RELEASE.wait(HOLD_TIMEOUT)
            return Response({"id": order_id}, status=status.HTTP_201_CREATED)
        if kind == "crash":
            raise RuntimeError("the view failed after writing")
        if kind == "circuit-open":
            with BREAKER.guard():
                return Response({"id": order_id}, status=status.HTTP_201_CREATED)
        if kind == "bulkhead-full":
            with DistributedBulkhead(BULKHEAD_NAME, 1).slot():
                return Response({"id": order_id}, status=status.HTTP_201_CREATED)
        if kind == "locked":
            with DistributedLock(LOCK_NAME, ttl=30):
                return Response({"id": order_id}, status=status.HTTP_201_CREATED)
        if kind == "invalid":
            raise ValidationError({"sku": ["rejected after writing"]})
        if kind == "big":
            return Response({"id": order_id, "padding": "x" * BIG_BODY_BYTES}, status=status.HTTP_201_CREATED)
        if kind == "streaming":
            return StreamingHttpResponse(iter([b'{"id": ', str(order_id).encode(), b"}"]), status=201,
                                         content_type="application/json")
        if kind == "empty":
            return Response(status=status.HTTP_204_NO_CONTENT)
        raise AssertionError(f"unknown kind {kind!r}")


class SessionOnlyView(APIView):
    """A view that authenticates by session only: a Bearer header means nothing to it."""

    authentication_classes = [SessionAuthentication]

    def post(self, request):
        return Response({"id": _place_order(request), "user": request.user.get_username()}, status=201)


class AliceThenBob(BaseAuthentication):
    """Authenticates as alice on a request's first authentication and as bob on every later one."""

    def authenticate(self, request):
        django_request = request._request
        calls = getattr(django_request, "test_authentications", 0)
        django_request.test_authentications = calls + 1
        return get_user_model().objects.get(username="alice" if calls == 0 else "bob"), None


class PrincipalChangesView(APIView):
    authentication_classes = [AliceThenBob]

    def post(self, request):
        return Response({"id": _place_order(request), "user": request.user.get_username()}, status=201)


urlpatterns = [
    path("api/idem-test/session-only/", SessionOnlyView.as_view()),
    path("api/idem-test/principal-changes/", PrincipalChangesView.as_view()),
    path("api/idem-test/<str:kind>/", WriteThenAnswerView.as_view()),
    *project_urlpatterns,
]
