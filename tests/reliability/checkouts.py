"""How every checkout of a scenario ended, checked against the database and the payment provider's own record.

The scenarios' provider (tests/payment_stub.py) declines every DECLINED_EVERY-th order and answers the first
charge request of every FAILING_EVERY-th order (offset by one) with a 503, so faults strike checkouts on both
paths and through retries. Once the system settled: a declined order's saga compensated (order cancelled with
`payment_declined`, its reservation released, its stock back, nothing charged); every other order's saga
completed (order confirmed, one charge at the provider under its payment's Idempotency-Key with the charge id
the payment recorded, never refunded, its stock taken once).
"""

from __future__ import annotations

from collections import defaultdict

import psycopg

from apps.orders.models import Order, Payment, Product, Reservation
from apps.orders.sagas import CHECKOUT
from apps.sagas.models import SagaInstance
from tests.payment_stub import PaymentStub
from tests.reliability.invariants import PRODUCT_STOCK, Violations

DECLINED_EVERY = 10
FAILING_EVERY = 10


def _expected(order_id: int) -> tuple[str, str, str, str]:
    """(saga state, order status, cancel reason, payment status) the checkout of ``order_id`` must end in."""
    if order_id % DECLINED_EVERY == 0:
        return (SagaInstance.State.COMPENSATED, Order.Status.CANCELLED, "payment_declined", Payment.Status.DECLINED)
    return SagaInstance.State.COMPLETED, Order.Status.CONFIRMED, "", Payment.Status.CHARGED


def check_checkouts(conn: psycopg.Connection, prefix: str, provider: PaymentStub) -> Violations:
    """Every invariant about how the checkouts of ``prefix``'s orders ended, and what the provider holds."""
    found = Violations()
    rows = conn.execute(f"""
        SELECT o.id, o.status, o.cancel_reason, o.quantity, pr.stock, p.status, p.idempotency_key,
               p.provider_charge_id, r.released_at IS NOT NULL
        FROM {Order._meta.db_table} o
        JOIN {Product._meta.db_table} pr ON pr.sku = o.sku
        LEFT JOIN {Payment._meta.db_table} p ON p.order_id = o.id
        LEFT JOIN {Reservation._meta.db_table} r ON r.order_id = o.id
        WHERE o.sku LIKE %s ORDER BY o.id""", [f"{prefix}-%"]).fetchall()
    sagas: dict[str, list[str]] = defaultdict(list)
    for key, state in conn.execute(f"SELECT key, state FROM {SagaInstance._meta.db_table} "
                                   "WHERE name = %s AND key = ANY(%s)", [CHECKOUT, [str(row[0]) for row in rows]]):
        sagas[key].append(state)
    charges = {charge["key"]: charge for charge in provider.charges()}
    refunded = {refund.get("charge_id") for refund in provider.refunds()}

    for order_id, status, reason, quantity, stock, payment, key, charge_id, released in rows:
        saga_state, want_status, want_reason, want_payment = _expected(order_id)
        confirmed = want_status == Order.Status.CONFIRMED
        if sagas[str(order_id)] != [saga_state]:
            found.add(f"a checkout saga did not end {saga_state} exactly once",
                      f"order {order_id}: sagas {sagas[str(order_id)]}")
        if (status, reason) != (want_status, want_reason):
            found.add(f"an order not {want_status} {want_reason}".rstrip(), f"order {order_id}: {status} {reason}")
        if payment != want_payment:
            found.add(f"a payment not {want_payment}", f"order {order_id}: {payment}")
        if released == confirmed:
            found.add("a reservation released on the wrong path" if released else "a reservation never released",
                      f"order {order_id} ({status})")
        if stock != PRODUCT_STOCK - (quantity if confirmed else 0):
            found.add("stock not what the outcome left", f"order {order_id} ({status}): {stock} of {PRODUCT_STOCK}")
        charge = charges.get(key)
        if confirmed and (charge is None or charge["declined"] or charge["id"] != charge_id
                          or charge["order_id"] != order_id):
            found.add("a confirmed order not charged as its payment records", f"order {order_id}: {key} → {charge}")
        if not confirmed and charge is not None and not charge["declined"] and charge["id"] not in refunded:
            found.add("a cancelled order charged and not refunded", f"order {order_id}: {charge}")
        if confirmed and charge_id in refunded:
            found.add("a confirmed order refunded", f"order {order_id}: {charge_id}")
    return found
