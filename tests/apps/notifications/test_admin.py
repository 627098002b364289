"""Webhook admin: viewers see failing and disabled endpoints; operators' actions go through audited services."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.core.groups import OPERATORS, VIEWERS
from apps.core.models import OperatorAction
from apps.notifications.delivery import delivery_attempt
from apps.notifications.models import Delivery, Endpoint
from tests.apps.notifications.support import delivery_of, endpoint_for, fan_out
from tests.authz import staff_member

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_viewers_see_failing_endpoints_and_the_delivery_log(user, receiver):
    receiver.script("/admin-failing", (500, {}))
    endpoint, _ = endpoint_for(user, receiver.url("/admin-failing"))
    delivery = delivery_of(fan_out(), endpoint)
    delivery_attempt(delivery_id=delivery.pk)
    client = _client(staff_member("viewer", group=VIEWERS))

    page = client.get("/admin/notifications/endpoint/?health=failing")
    assert page.status_code == 200 and receiver.url("/admin-failing") in page.content.decode()
    assert client.get(f"/admin/notifications/delivery/{delivery.pk}/change/").status_code == 200
    assert client.get("/admin/notifications/message/").status_code == 200
    assert client.get("/admin/notifications/attempt/").status_code == 200
    refused = client.post("/admin/notifications/endpoint/", {"action": "disable", "_selected_action": [endpoint.pk]})
    assert refused.status_code in (200, 302) and Endpoint.objects.get(pk=endpoint.pk).enabled


def test_operators_disable_enable_and_replay(user, receiver):
    endpoint, _ = endpoint_for(user, receiver.url("/admin-ops"))
    delivery = delivery_of(fan_out(), endpoint)
    delivery_attempt(delivery_id=delivery.pk)
    client = _client(staff_member("operator", group=OPERATORS))

    client.post("/admin/notifications/endpoint/", {"action": "disable", "_selected_action": [endpoint.pk]})
    assert not Endpoint.objects.get(pk=endpoint.pk).enabled
    client.post("/admin/notifications/endpoint/", {"action": "enable", "_selected_action": [endpoint.pk]})
    assert Endpoint.objects.get(pk=endpoint.pk).enabled
    client.post("/admin/notifications/delivery/", {"action": "replay", "_selected_action": [delivery.pk]})

    assert Delivery.objects.get(pk=delivery.pk).state == "pending"
    assert set(OperatorAction.objects.filter(actor="operator").values_list("action", flat=True)) == {
        "webhooks.disable", "webhooks.enable", "webhooks.replay"}
