"""/metrics is open locally and restricted in production (token or allowed networks)."""

import ipaddress

import pytest

# /metrics reads the outbox backlog from the database at scrape time.
pytestmark = pytest.mark.django_db


def test_metrics_exposes_prometheus_text(client):
    client.get("/health/live")
    response = client.get("/metrics")

    assert response.status_code == 200
    assert b"django_http_requests_total_by_method_total" in response.content
    assert b"taskplane_outbox_pending" in response.content


@pytest.fixture
def restricted(settings):
    settings.METRICS_PUBLIC = False
    settings.METRICS_TOKEN = "scrape-token"
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    return settings


def test_restricted_metrics_refuse_strangers(client, restricted):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403


def test_restricted_metrics_accept_the_token(client, restricted):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token").status_code == 200


def test_restricted_metrics_accept_an_allowed_network(client, restricted):
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
