"""The payment provider's client: charge and refund over ``apps.core.http_client`` (docs/sagas.md#payments).

The protocol: ``POST {PAYMENTS_URL}/charges`` with JSON ``{"order_id", "amount_cents", "currency"}`` and an
``Idempotency-Key`` header → 2xx ``{"id": "<charge id>"}``; 402 is a decline. ``POST {PAYMENTS_URL}/refunds``
with ``{"charge_id"}`` and its own ``Idempotency-Key`` → 2xx ``{"id": "<refund id>"}``. The keys are the
saga engine's stable per-step keys, so a retried step is the same charge (or refund) at the provider.

The client does not retry by itself: the saga step is retried through the outbox (a row due later, never
a sleep in the worker). Its breaker stops calling a provider that keeps failing; an open breaker is one
more transient failure. No URL guard: PAYMENTS_URL is the operator's configuration, not user input.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.core.http_client import HttpConnectionError, HttpError, HttpTimeoutError, Response, http_client
from apps.core.resilience.errors import CircuitOpen
from apps.core.resilience.http_support import retry_after_seconds

DECLINED = 402
# Gateway answers: a proxy gave up waiting, so the provider may have acted.
NO_ANSWER_STATUSES = frozenset({502, 504})
_clients: dict[tuple[str, float], Any] = {}


class PaymentDeclined(Exception):
    """The provider declined the charge (402): a business failure, never retried."""


class PaymentRejected(Exception):
    """The provider refused the request itself (a 4xx other than 402 and 429): retrying cannot help."""


class PaymentUnavailable(Exception):
    """A transient failure (5xx, 429, a timeout, a connection error, an open breaker): retry later.

    ``uncertain``: the request may have reached the provider without an answer coming back (a read
    timeout, a gateway's 502/504), so a charge may exist.
    """

    def __init__(self, message: str, *, retry_after: float = 0.0, uncertain: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # read by the saga engine's retry (retry_after_of)
        self.uncertain = uncertain


def _client() -> Any:
    # One pooled session per provider URL and timeout, so a settings change (tests) gets its own.
    key = (settings.PAYMENTS_URL, settings.PAYMENTS_TIMEOUT_SECONDS)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = http_client("payments", base_url=settings.PAYMENTS_URL,
                                             timeout=settings.PAYMENTS_TIMEOUT_SECONDS, retry=None)
    return client


def _post(path: str, body: dict[str, Any], *, idempotency_key: str) -> Response:
    try:
        return _client().post(path, json=body, headers={"Idempotency-Key": idempotency_key})
    except CircuitOpen as exc:
        raise PaymentUnavailable(str(exc), retry_after=exc.retry_after) from exc
    except HttpError as exc:
        # A read timeout was sent and maybe acted on; a connect failure (or connect timeout) never arrived.
        uncertain = isinstance(exc, HttpTimeoutError) and not isinstance(exc, HttpConnectionError)
        raise PaymentUnavailable(f"payment provider unreachable: {type(exc).__name__}", uncertain=uncertain) from exc


def _provider_id(response: Response, what: str) -> str:
    """The ``id`` of a 2xx answer; anything else is raised as the failure it is."""
    status = response.status_code
    if status >= 500 or status == 429:
        raise PaymentUnavailable(f"payment provider answered {status} to the {what}",
                                 retry_after=retry_after_seconds(response.headers.get("Retry-After")) or 0.0,
                                 uncertain=status in NO_ANSWER_STATUSES)
    if not 200 <= status < 300:
        raise PaymentRejected(f"payment provider refused the {what}: {status} {response.text[:200]}")
    try:
        provider_id = response.json()["id"]
    except (ValueError, KeyError, TypeError):
        provider_id = None
    if not isinstance(provider_id, str) or not provider_id:
        # The provider acted (2xx) but said nothing usable: asking again with the same key tells us.
        raise PaymentUnavailable(f"payment provider's {what} answer has no id: {response.text[:200]}")
    return provider_id


def payment_charge(*, order_id: int, amount_cents: int, currency: str, idempotency_key: str) -> str:
    """Charge the order's amount at the provider; returns the charge id (raises PaymentDeclined on 402)."""
    response = _post("charges", {"order_id": order_id, "amount_cents": amount_cents, "currency": currency},
                     idempotency_key=idempotency_key)
    if response.status_code == DECLINED:
        raise PaymentDeclined(f"payment declined for order {order_id}: {response.text[:200]}")
    return _provider_id(response, "charge")


def payment_refund(*, charge_id: str, idempotency_key: str) -> str:
    """Refund a charge at the provider; returns the refund id. Every failure is transient (retried)."""
    response = _post("refunds", {"charge_id": charge_id}, idempotency_key=idempotency_key)
    try:
        return _provider_id(response, "refund")
    except PaymentRejected as exc:  # a compensation must end in success: an operator sees the retries
        raise PaymentUnavailable(str(exc)) from exc
