"""The README's flow on real `celery worker` processes: POST an order, the relay, the subscriber and every
saga step run in the worker, and the order ends `confirmed` (a GIFT-13 one `cancelled`, declined)."""

from __future__ import annotations

import pytest

from apps.orders.models import Order, Product
from tests.helpers import wait_until
from tests.processes import celery_process

pytestmark = pytest.mark.django_db(transaction=True)
FINAL = (Order.Status.CONFIRMED, Order.Status.CANCELLED)


@pytest.fixture(scope="module")
def worker_stack(tmp_path_factory, payment_stub):
    """One worker on every queue (its relay included) for the module, charging the session's payment stub."""
    log = tmp_path_factory.mktemp("checkout-workers") / "worker.log"
    with celery_process("worker", log, "--concurrency", "3", TEST_PAYMENTS_URL=payment_stub.url):
        yield log


def _final(order_id: int) -> Order | None:
    return Order.objects.filter(pk=order_id, status__in=FINAL).first()


def test_the_readme_flow_confirms_an_order_and_cancels_a_declined_one(worker_stack, api_client, payments):
    placed = {}
    for sku in ("BOOK-1", "GIFT-13"):
        response = api_client.post("/api/orders/", {"sku": sku, "quantity": 1}, format="json",
                                   HTTP_IDEMPOTENCY_KEY=f"readme-{sku}")
        assert response.status_code == 201, response.content
        assert response.json()["status"] == "pending"
        placed[sku] = response.json()["id"]

    book = wait_until(lambda: _final(placed["BOOK-1"]), timeout=60, interval=0.2,
                      message=f"the BOOK-1 order to be checked out (log {worker_stack})")
    gift = wait_until(lambda: _final(placed["GIFT-13"]), timeout=60, interval=0.2,
                      message=f"the GIFT-13 order to be checked out (log {worker_stack})")

    assert (book.status, book.cancel_reason) == ("confirmed", "")
    assert (gift.status, gift.cancel_reason) == ("cancelled", "payment_declined")
    assert Product.objects.get(sku="BOOK-1").stock == 999 and Product.objects.get(sku="GIFT-13").stock == 1000
    assert [charge["order_id"] for charge in payments.charges()] == [book.pk]
    assert [charge["order_id"] for charge in payments.charges(declined=True)] == [gift.pk]
