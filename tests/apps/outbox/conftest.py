import pytest
from cryptography.fernet import Fernet

from tests.apps.outbox.support import SECRET_TOPIC


@pytest.fixture
def encrypted_topic(settings):
    """A topic stored encrypted, with a fresh key."""
    settings.FERNET_KEYS = [Fernet.generate_key().decode()]
    settings.OUTBOX_ENCRYPTED_TOPICS = [SECRET_TOPIC]
    return SECRET_TOPIC
