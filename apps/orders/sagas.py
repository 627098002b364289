"""The ``orders.checkout`` saga (discovered at start-up; docs/sagas.md#the-checkout-saga).

approval (only when the order needs it) → reserve (compensation: release) → payment (records the charge
to come; compensation: refund) → charge → confirm (the pivot). The refund belongs to the step *before*
the provider call so that it is registered even when the charge's answer was lost: the engine compensates
only steps that succeeded, and a charge that timed out may still have been made.
"""

from __future__ import annotations

from django.conf import settings

from apps.core.resilience.retry import RetryPolicy
from apps.orders import checkout
from apps.orders.payments import PaymentDeclined, PaymentRejected
from apps.orders.services import APPROVAL_TOPIC, CHECKOUT, order_checkout_ended
from apps.sagas.definitions import Signal, Step, saga

# Provider calls: transient failures retried with full-jitter backoff (outbox rows due later), then the
# order is cancelled (payment_failed). Past the pivot, confirm is retried until it succeeds.
PAYMENT_RETRY = RetryPolicy(max_attempts=settings.PAYMENTS_CHARGE_MAX_ATTEMPTS,
                            base_delay=settings.PAYMENTS_RETRY_BASE_SECONDS, max_delay=60.0,
                            max_total_delay=24 * 3600.0, retry_on=(Exception,))


def _needs_approval(data: dict) -> bool:
    return bool(data.get("needs_approval"))


CHECKOUT_SAGA = saga(CHECKOUT, on_end=order_checkout_ended, steps=[
    Step("approval", signal=Signal(APPROVAL_TOPIC, timeout_seconds=settings.ORDERS_APPROVAL_TIMEOUT_SECONDS),
         when=_needs_approval),
    Step("reserve", action=checkout.reserve_stock, compensation=checkout.release_stock,
         permanent=(checkout.OutOfStock,), in_transaction=True),
    # Its retry policy paces the refund's retries (a compensation backs off with its step's policy).
    Step("payment", action=checkout.record_payment, compensation=checkout.refund, in_transaction=True,
         retry=PAYMENT_RETRY),
    Step("charge", action=checkout.charge, permanent=(PaymentDeclined, PaymentRejected), retry=PAYMENT_RETRY,
         start_to_close_seconds=max(30.0, 3 * settings.PAYMENTS_TIMEOUT_SECONDS)),
    Step("confirm", action=checkout.confirm, pivot=True, in_transaction=True),
])
