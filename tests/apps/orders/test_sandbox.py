"""The sandbox payment provider (/sandbox/payments/): the payments protocol, idempotent by key; never in production."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from apps.orders.models import SandboxCharge, SandboxRefund
from tests.processes import ROOT
from tests.settings.test_env import VALID_PRODUCTION_ENV

pytestmark = pytest.mark.django_db
CHARGES, REFUNDS = "/sandbox/payments/charges", "/sandbox/payments/refunds"


def _post(client, url: str, body: dict, key: str | None = "k-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(url, body, content_type="application/json", **headers)


def test_a_charge_is_made_once_per_idempotency_key(client):
    body = {"order_id": 7, "amount_cents": 2500, "currency": "EUR"}
    first, again = _post(client, CHARGES, body), _post(client, CHARGES, body)

    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and first.json()["id"].startswith("ch_")
    assert SandboxCharge.objects.count() == 1
    assert _post(client, CHARGES, body, key="k-2").json()["id"] != first.json()["id"]


def test_an_amount_ending_in_13_cents_is_declined_every_time(client):
    body = {"order_id": 8, "amount_cents": 1313, "currency": "EUR"}

    assert _post(client, CHARGES, body).status_code == 402
    assert _post(client, CHARGES, body).status_code == 402
    assert SandboxCharge.objects.get().declined


def test_a_refund_is_made_once_and_at_most_once_per_charge(client):
    charge_id = _post(client, CHARGES, {"order_id": 9, "amount_cents": 250, "currency": "EUR"}).json()["id"]

    first = _post(client, REFUNDS, {"charge_id": charge_id}, key="r-1")
    again = _post(client, REFUNDS, {"charge_id": charge_id}, key="r-1")
    other_key = _post(client, REFUNDS, {"charge_id": charge_id}, key="r-2")

    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert other_key.status_code == 409
    assert SandboxRefund.objects.count() == 1
    assert _post(client, REFUNDS, {"charge_id": "ch_unknown"}, key="r-3").status_code == 404


@pytest.mark.parametrize(("body", "key"), [
    ({"order_id": 1, "amount_cents": 1, "currency": "EUR"}, None),
    ({"order_id": "1", "amount_cents": 1, "currency": "EUR"}, "k"),
    ({"order_id": 1, "amount_cents": -1, "currency": "EUR"}, "k"),
    ({"order_id": 1, "amount_cents": 1, "currency": "EURO"}, "k"),
])
def test_a_malformed_charge_is_a_400_and_charges_nothing(client, body, key):
    assert _post(client, CHARGES, body, key=key).status_code == 400
    assert not SandboxCharge.objects.exists()


def test_production_settings_do_not_route_the_sandbox():
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DJANGO_SETTINGS_MODULE": "settings.production",
                   "TASKPLANE_ENV_FILE": "off", **VALID_PRODUCTION_ENV}
    script = ("import django; django.setup(); from django.urls import resolve, Resolver404\n"
              "try:\n    resolve('/sandbox/payments/charges'); print('routed')\n"
              "except Resolver404:\n    print('not routed')")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1:] == ["not routed"], result.stderr[-2000:]
