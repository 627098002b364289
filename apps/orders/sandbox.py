"""The sandbox payment provider: the payments protocol served by the web process under /sandbox/payments/.

Only routed when PAYMENTS_URL is unset (the embedded default and local settings; never in production),
so `make run` checks orders out with nothing configured. It speaks the protocol of apps/orders/payments.py:

- ``POST charges`` ``{"order_id", "amount_cents", "currency"}`` with an ``Idempotency-Key`` → 201
  ``{"id": "ch_…"}``; an amount whose last two digits are 13 (e.g. GIFT-13 at 13.13) is declined: 402.
- ``POST refunds`` ``{"charge_id"}`` with an ``Idempotency-Key`` → 201 ``{"id": "re_…"}``; 404 for an
  unknown or declined charge.

Both are idempotent by key (SandboxCharge / SandboxRefund rows): the same key answers what it answered
the first time and never charges or refunds twice. A charge is refunded at most once.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.orders.models import SandboxCharge, SandboxRefund

DECLINED_CENTS = 13  # amount_cents % 100 == 13 is declined


def sandbox_declines(*, amount_cents: int) -> bool:
    """The sandbox's one decline rule: the amount's last two digits are 13."""
    return amount_cents % 100 == DECLINED_CENTS


def _request(request: HttpRequest) -> tuple[str, dict[str, Any]] | JsonResponse:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > 200:
        return JsonResponse({"error": "an Idempotency-Key header (1 to 200 characters) is required"}, status=400)
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JsonResponse({"error": "the body must be a JSON object"}, status=400)
    return key, body


def _charge_answer(charge: SandboxCharge) -> JsonResponse:
    if charge.declined:
        return JsonResponse({"error": "declined", "id": charge.charge_id}, status=402)
    return JsonResponse({"id": charge.charge_id, "amount_cents": charge.amount_cents}, status=201)


def _once(model: type, key: str, create: Any) -> Any:
    """The row stored for ``key``, created by ``create()`` the first time (a concurrent twin reads the winner's)."""
    existing = model.objects.filter(idempotency_key=key).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return create()
    except IntegrityError:
        return model.objects.get(idempotency_key=key)


@csrf_exempt
@require_POST
def charges(request: HttpRequest) -> JsonResponse:
    """Charge (or decline) an order's amount, once per Idempotency-Key."""
    parsed = _request(request)
    if isinstance(parsed, JsonResponse):
        return parsed
    key, body = parsed
    order_id, amount, currency = body.get("order_id"), body.get("amount_cents"), body.get("currency")
    if not (isinstance(order_id, int) and isinstance(amount, int) and amount >= 0
            and isinstance(currency, str) and len(currency) == 3):
        return JsonResponse({"error": "order_id, amount_cents (integers) and currency (3 letters) are required"},
                            status=400)
    charge = _once(SandboxCharge, key, lambda: SandboxCharge.objects.create(
        idempotency_key=key, charge_id=f"ch_{uuid.uuid4().hex}", order_id=order_id, amount_cents=amount,
        currency=currency, declined=sandbox_declines(amount_cents=amount)))
    return _charge_answer(charge)


@csrf_exempt
@require_POST
def refunds(request: HttpRequest) -> JsonResponse:
    """Refund a charge, once per Idempotency-Key (and at most once per charge)."""
    parsed = _request(request)
    if isinstance(parsed, JsonResponse):
        return parsed
    key, body = parsed
    charge = SandboxCharge.objects.filter(charge_id=str(body.get("charge_id", "")), declined=False).first()
    if charge is None:
        return JsonResponse({"error": "no such charge"}, status=404)
    existing = SandboxRefund.objects.filter(charge=charge).first()
    if existing is not None and existing.idempotency_key != key:
        return JsonResponse({"error": "this charge is already refunded", "id": existing.refund_id}, status=409)
    refund = existing or _once(SandboxRefund, key, lambda: SandboxRefund.objects.create(
        idempotency_key=key, refund_id=f"re_{uuid.uuid4().hex}", charge=charge))
    return JsonResponse({"id": refund.refund_id}, status=201)
