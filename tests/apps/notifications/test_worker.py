"""Webhooks end to end with a real `celery worker` (relay included): event → fan-out → signed POSTs, retried."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings as django_settings
from django.db import transaction
from standardwebhooks.webhooks import Webhook

from apps.notifications.models import Attempt, Delivery
from apps.orders.services import ORDER_PLACED
from apps.outbox import publish
from tests.apps.notifications.conftest import KEY
from tests.apps.notifications.support import endpoint_for
from tests.helpers import wait_until
from tests.processes import celery_process

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    """One worker for the module, consuming every queue (so it relays too), with a compressed retry schedule."""
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).flushdb()
    log = tmp_path_factory.mktemp("webhooks") / "worker.log"
    with celery_process("worker", log, "--concurrency", "2", FERNET_KEYS=KEY, WEBHOOKS_RETRY_SCHEDULE="0,1,1",
                        OUTBOX_POLL_MS="200"):
        yield log


def test_an_order_event_reaches_the_endpoint_signed_and_a_500_is_retried_with_the_same_id(worker, receiver, user):
    path = "/worker/orders"
    receiver.script(path, (500, {}))
    endpoint, secret = endpoint_for(user, receiver.url(path), event_types=["order.*"])

    with transaction.atomic():
        event = publish(ORDER_PLACED, {"order_id": 42, "sku": "tea", "quantity": 1}, key="order:42")

    delivery = wait_until(lambda: Delivery.objects.filter(endpoint=endpoint, state="succeeded").first(), timeout=60,
                          message=f"the delivery to succeed (worker log {worker})")
    first, second = receiver.at(path)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(event.message_id)
    body = Webhook(secret).verify(second.body, second.headers)
    assert body == {"type": ORDER_PLACED, "timestamp": body["timestamp"],
                    "data": {"order_id": 42, "sku": "tea", "quantity": 1}}
    assert delivery.attempts == 2
    assert list(Attempt.objects.filter(delivery=delivery).order_by("id").values_list("status_code", flat=True)) == [
        500, 200]
