import pytest
import redis
from cryptography.fernet import Fernet

from tests.apps.notifications.receiver import Receiver

KEY = Fernet.generate_key().decode()


@pytest.fixture(autouse=True)
def _webhook_settings(settings):
    # Every test's receiver is the same loopback host: its breaker's failures must not carry over.
    redis.Redis.from_url(settings.RESILIENCE_REDIS_URL).flushdb()
    settings.FERNET_KEYS = [KEY]  # secrets are stored encrypted; a worker started by a test gets the same key
    settings.WEBHOOKS_ALLOW_PRIVATE_HOSTS = True
    settings.WEBHOOKS_ALLOW_HTTP = True


@pytest.fixture(scope="module")
def receiver():
    server = Receiver().start()
    yield server
    server.stop()
