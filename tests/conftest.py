"""Suite-wide fixtures. The suite needs real PostgreSQL, Redis and RabbitMQ and stops at once without them."""

from __future__ import annotations

import os

import pytest
import redis
from django.conf import settings

from settings.env import ENV_FILE_VARIABLE
from tests.payment_stub import PaymentStub
from tests.services import unreachable_services

# A developer's .env configures `make run` and manage.py, never the suite: this process and every child
# it starts (workers, beat, manage.py, the `make run` stack) skip it unless a test names its own file.
os.environ[ENV_FILE_VARIABLE] = "off"


def pytest_sessionstart(session: pytest.Session) -> None:
    problems = unreachable_services()
    if problems:
        pytest.exit("Required services are missing:\n  " + "\n  ".join(problems), returncode=3)


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with an empty cache (throttle counters, health probe keys)."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield


# The catalog every database test starts with (the SKUs `make run` seeds too): orders may only be placed
# for listed SKUs. GIFT-13's price ends in 13 cents, which the sandbox and the payment stub decline.
CATALOG = (("BOOK-1", "A book", 1250), ("PEN-1", "A pen", 250), ("GIFT-13", "A gift card", 1313))
CATALOG_STOCK = 1000
_DATABASE_FIXTURES = ("db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback")


@pytest.fixture(autouse=True)
def catalog(request):
    """Seed the catalog for every test that uses the database (after pytest-django set the database up)."""
    if request.node.get_closest_marker("django_db") is None and not any(
            name in request.fixturenames for name in _DATABASE_FIXTURES):
        return None
    request.getfixturevalue("_django_db_helper")
    from apps.orders.models import Product

    Product.objects.bulk_create([Product(sku=sku, name=name, price_cents=price, stock=CATALOG_STOCK)
                                 for sku, name, price in CATALOG], ignore_conflicts=True)
    return {sku: price for sku, _, price in CATALOG}


@pytest.fixture(scope="session", autouse=True)
def payment_stub():
    """One payment provider (a real HTTP server on loopback) for the whole session; the workers tests start
    charge it too (TEST_PAYMENTS_URL, read by settings/test.py in child processes)."""
    stub = PaymentStub()
    os.environ["TEST_PAYMENTS_URL"] = stub.url
    yield stub
    os.environ.pop("TEST_PAYMENTS_URL", None)
    stub.stop()


@pytest.fixture
def payments(payment_stub, settings):
    """The checkout's provider is the stub, with nothing scripted or received, and closed breakers."""
    payment_stub.reset()
    settings.PAYMENTS_URL = payment_stub.url
    settings.PAYMENTS_TIMEOUT_SECONDS = 1.0
    redis.Redis.from_url(settings.RESILIENCE_REDIS_URL).flushdb()
    return payment_stub


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="not-used-here")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="not-used-here")


@pytest.fixture
def api_key(user) -> str:
    from apps.core.api_keys import api_key_create

    return api_key_create(username=user.username)[1]


@pytest.fixture
def api_client(api_key):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    return client


@pytest.fixture
def broker_redis():
    """The Redis database used as the Celery broker in tests, emptied before each test."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's test database, torn down only after this process's flag listener stopped:
    the listener keeps a connection open, which would make dropping the database fail."""
    yield
    from apps.flags.snapshot import listener_stop

    listener_stop()
