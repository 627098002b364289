"""Outbox management commands: stats table and JSON, retry, relay (once and leased), key rotation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from apps.core.crypto import decrypt_text
from apps.outbox import enqueue, publish
from apps.outbox.models import OutboxMessage
from apps.outbox.serving import PostgresWaker
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db

SECRET_TOPIC = "customer.updated"


def run(*args: str, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def event(topic: str = "order.placed", payload=None) -> OutboxMessage:
    with transaction.atomic():
        return publish(topic, payload if payload is not None else {"n": 1})


def stored(**fields) -> OutboxMessage:
    defaults = {"kind": "event", "name": "order.placed", "payload": "{}"}
    return OutboxMessage.objects.create(**{**defaults, **fields})


def test_stats_prints_a_table():
    event()
    stored(status="dead")
    stored(status="published", published_at=timezone.now())

    lines = run("outbox_stats").splitlines()
    lines, relays = lines[:-1], lines[-1]

    table = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in lines if not line.endswith(" s")}
    assert table == {"pending": "1", "published": "1", "dead": "1", "discarded": "0", "published last minute": "1",
                     "unroutable events": "0"}
    assert any(line.startswith("oldest pending age") and line.endswith(" s") for line in lines)
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert relays == "relays: none has run yet"


def test_stats_json_is_machine_readable():
    event()

    stats = json.loads(run("outbox_stats", "--json"))

    assert stats["counts"] == {"pending": 1, "published": 0, "dead": 0, "discarded": 0}
    assert set(stats) == {"counts", "counts_estimated", "oldest_pending_age_seconds", "published_last_minute",
                          "unroutable_events", "relay_problem", "relays"}
    assert (stats["relays"], stats["relay_problem"], stats["unroutable_events"]) == ([], None, 0)


def test_retry_dead_requeues_every_dead_message_but_not_discarded_ones():
    dead = [stored(status="dead", attempts=10) for _ in range(2)]
    discarded = stored(status="discarded")

    assert run("outbox_retry", "--dead").strip() == "Re-queued 2 dead message(s)."
    assert set(OutboxMessage.objects.filter(pk__in=[m.pk for m in dead]).values_list("status", flat=True)) == {
        "pending"
    }
    assert OutboxMessage.objects.get(pk=discarded.pk).status == "discarded"


def test_retry_by_id_requeues_dead_or_discarded_and_counts_them():
    dead, discarded = stored(status="dead"), stored(status="discarded")

    output = run("outbox_retry", str(dead.pk), str(discarded.pk))

    assert output.strip() == "Re-queued 2 of 2 message(s)."
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"pending"}


def test_retry_of_ids_it_could_not_retry_fails_naming_them():
    """issue 15 §0: `outbox_retry 999` (no such message) exited 0; partial retries keep what they re-queued."""
    dead, published = stored(status="dead"), stored(status="published")
    out = StringIO()

    with pytest.raises(CommandError) as caught:
        call_command("outbox_retry", str(dead.pk), str(published.pk), "99999999", stdout=out, stderr=StringIO())

    assert out.getvalue().strip() == "Re-queued 1 of 3 message(s)."
    assert str(caught.value) == (f"Not retried: {published.pk} (published), 99999999 (no such message). "
                                 "Only dead or discarded messages can be retried.")
    statuses = dict(OutboxMessage.objects.values_list("id", "status"))
    assert statuses == {dead.pk: "pending", published.pk: "published"}


def test_retry_of_a_missing_id_exits_non_zero():
    """issue 15 §0: the command's exit status, as a shell sees it."""
    result = subprocess.run([sys.executable, "manage.py", "outbox_retry", "99999999"], cwd=ROOT, env=process_env(),
                            capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 1
    assert "Re-queued 0 of 1 message(s)." in result.stdout
    assert "Not retried: 99999999 (no such message)." in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "give message ids or --dead"), (("--dead", "1"), "not both"), (("abc",), "is not a message id"),
     (("0",), "is not a message id"), (("-5",), "is not a message id")],
)
def test_retry_rejects_bad_input_clearly(args, message):
    stored(status="dead")

    with pytest.raises(CommandError, match=message):
        run("outbox_retry", *args)
    assert OutboxMessage.objects.get().status == "dead"


def test_relay_once_publishes_pending_messages(broker_redis):
    with transaction.atomic():
        enqueue("core.heartbeat")
        enqueue("core.heartbeat")

    assert run("outbox_relay", "--once").strip() == "Published 2 message(s)."
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"published"}
    assert broker_redis.llen("default") == 2


def test_relay_once_with_an_unreachable_broker_fails_clearly(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    event()

    with pytest.raises(CommandError, match="Broker unavailable"):
        run("outbox_relay", "--once")
    assert OutboxMessage.objects.get().status == "pending"


def test_relay_serves_leases_and_prints_a_line_for_each(broker_redis):
    with transaction.atomic():
        enqueue("core.heartbeat")

    lines = run("outbox_relay", "--lease", "0.3", "--leases", "2").splitlines()

    assert len(lines) == 2
    assert [line.split(" ", 1)[1] for line in lines] == ["lease 1: lease-ended", "lease 2: lease-ended"]
    assert OutboxMessage.objects.get().status == "published"


def test_relay_reports_busy_when_every_slot_is_taken():
    holder = PostgresWaker()
    try:
        assert holder.acquire_slot() == 0  # OUTBOX_RELAYS is 1 in tests
        output = run("outbox_relay", "--lease", "5", "--leases", "1")
    finally:
        holder.close()

    assert output.strip().endswith("lease 1: busy")


def test_relay_stops_cleanly_on_sigterm():
    previous_handler = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        output = run("outbox_relay", "--lease", "30")
    finally:
        timer.cancel()

    assert output.strip().endswith("Relay stopped.")
    assert time.monotonic() - started < 20
    assert signal.getsignal(signal.SIGTERM) == previous_handler  # the command put the old handler back


@pytest.mark.parametrize(("args", "message"), [(("--lease", "0"), "--lease"), (("--leases", "0"), "--leases")])
def test_relay_rejects_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        run("outbox_relay", *args)


def test_rotate_keys_reencrypts_with_the_newest_key(settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FERNET_KEYS = [old_key]
    settings.OUTBOX_ENCRYPTED_TOPICS = [SECRET_TOPIC]
    secret = event(SECRET_TOPIC, {"email": "a@example.com"})
    event("order.placed")
    settings.FERNET_KEYS = [new_key, old_key]

    assert run("outbox_rotate_keys").strip() == "Re-encrypted 1 payload(s) with the newest key."

    settings.FERNET_KEYS = [new_key]  # the old key can go now
    assert json.loads(decrypt_text(OutboxMessage.objects.get(pk=secret.pk).payload)) == {"email": "a@example.com"}


def test_rotate_keys_without_keys_fails_clearly(settings):
    settings.FERNET_KEYS = [Fernet.generate_key().decode()]
    settings.OUTBOX_ENCRYPTED_TOPICS = [SECRET_TOPIC]
    event(SECRET_TOPIC, {"email": "a@example.com"})
    settings.FERNET_KEYS = []

    with pytest.raises(CommandError, match="FERNET_KEYS is not set"):
        run("outbox_rotate_keys")
