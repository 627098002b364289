"""Health probes against the real database, cache, broker and a real worker process."""

import pytest
from django.core.management import call_command

from tests.processes import celery_process

pytestmark = pytest.mark.django_db(transaction=True)


def test_live_consults_nothing(client):
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_checks_dependencies_as_json(client):
    response = client.get("/health/ready", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    checks = response.json()
    assert set(checks.values()) == {"OK"}
    assert {name.split("(")[0] for name in checks} == {"Database", "Cache", "Migrations"}


def test_health_is_503_without_a_worker(client, broker_redis):
    response = client.get("/health/", HTTP_ACCEPT="application/json")

    assert response.status_code == 503
    assert "No Celery worker answered" in response.json()["Workers()"]


def test_health_is_200_with_a_worker_answering(client, tmp_path, broker_redis):
    with celery_process("worker", tmp_path / "worker.log", "--concurrency", "1"):
        response = client.get("/health/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200, response.json()
    assert set(response.json().values()) == {"OK"}


def test_unapplied_migration_makes_ready_fail(client):
    call_command("migrate", "orders", "zero", verbosity=0)
    try:
        response = client.get("/health/ready", HTTP_ACCEPT="application/json")
    finally:
        call_command("migrate", verbosity=0)

    assert response.status_code == 503
    assert "not applied" in response.json()["Migrations(alias='default')"]


def test_unreachable_broker_fails_health_but_not_readiness(client, settings):
    from apps.core.health import control_app

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    control_app.cache_clear()
    try:
        health = client.get("/health/", HTTP_ACCEPT="application/json")
        ready = client.get("/health/ready", HTTP_ACCEPT="application/json")
    finally:
        control_app.cache_clear()

    assert health.status_code == 503
    assert "Broker unreachable" in health.json()["Broker()"]
    assert ready.status_code == 200
