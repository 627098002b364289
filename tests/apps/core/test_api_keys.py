import hashlib

import pytest
from django.core.management import CommandError, call_command

from apps.core.models import ApiKey

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_the_key_once_on_the_last_line(user, capsys):
    call_command("create_api_key", user.username, "--name", "ci")

    raw_key = capsys.readouterr().out.strip().splitlines()[-1]
    stored = ApiKey.objects.get(user=user)
    assert raw_key.startswith("tp_")
    assert stored.key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    assert raw_key not in {stored.key_hash, stored.prefix, stored.name}
    assert stored.prefix == raw_key[:11]


def test_create_api_key_for_unknown_user_fails_clearly():
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_key", "ghost")


def test_key_authenticates_until_revoked(client, api_key):
    header = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    assert client.get("/api/orders/", **header).status_code == 200

    call_command("revoke_api_key", api_key[:11])

    assert client.get("/api/orders/", **header).status_code == 401


def test_revoke_unknown_prefix_fails_clearly():
    with pytest.raises(CommandError, match="No active key"):
        call_command("revoke_api_key", "tp_abcdefgh")
    with pytest.raises(CommandError, match="key prefix looks like"):
        call_command("revoke_api_key", "nonsense")


def test_key_of_inactive_user_is_rejected(client, user, api_key):
    user.is_active = False
    user.save()

    assert client.get("/api/orders/", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 401


def test_ensure_admin_creates_once(capsys, settings):
    settings.ADMIN_PASSWORD = ""
    call_command("ensure_admin")
    call_command("ensure_admin")

    out = capsys.readouterr().out
    assert "with password:" in out and "already exists" in out
