"""The relay publishes on the embedded default: SQLite and the filesystem broker (issue 15 §0).

`manage.py` runs as a user would run it, in child processes under settings.local, with a SQLite file and
a broker folder of the test's own (nothing of the test session's PostgreSQL or Redis is inherited).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.processes import ROOT

WRITE_ONE = (
    "from django.db import transaction\n"
    "from apps.outbox import enqueue\n"
    "with transaction.atomic():\n"
    "    enqueue('core.heartbeat', args=['sqlite'])\n"
)


def _manage(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TEST_", "PYTEST_", "DJANGO_", "DATABASE_", "CELERY_", "REDIS_", "PROMETHEUS_"))}
    env.update(DJANGO_SETTINGS_MODULE="settings.local", TASKPLANE_VAR_DIR=str(tmp_path / "var"),
               DATABASE_URL=f"sqlite:///{tmp_path / 'taskplane.sqlite3'}", CELERY_BROKER_URL="filesystem://localhost//",
               REDIS_URL="", LOG_FORMAT="text")
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_relay_once_publishes_on_sqlite_and_the_filesystem_broker(tmp_path):
    """issue 15 §0: the relay raised on every cycle under SQLite (django.utils.timezone.utc, gone in Django 5)."""
    assert _manage(tmp_path, "migrate", "--noinput").returncode == 0
    written = _manage(tmp_path, "shell", "-c", WRITE_ONE)
    assert written.returncode == 0, written.stderr

    relayed = _manage(tmp_path, "outbox_relay", "--once")

    assert relayed.returncode == 0, relayed.stderr
    assert relayed.stdout.strip() == "Published 1 message(s)."
    queued = list((tmp_path / "var" / "broker" / "queue").glob("*.default.msg"))
    assert len(queued) == 1, "the task message is in the filesystem broker's default queue"
    assert json.loads(queued[0].read_text())["headers"]["task"] == "core.heartbeat"
    stats = json.loads(_manage(tmp_path, "outbox_stats", "--json").stdout)
    assert stats["counts"]["published"] == 1 and stats["counts"]["pending"] == 0


WRITE_MANY = (
    "import json\n"
    "from django.db import transaction\n"
    "from apps.outbox.writing import Dispatch, Event, enqueue_many, publish_many\n"
    "with transaction.atomic():\n"
    "    events = publish_many([Event('t', {'n': n}, key='k') for n in range(3)])\n"
    "    tasks = enqueue_many([Dispatch('core.heartbeat', args=['a'], dedup_key='d'),\n"
    "                          Dispatch('core.heartbeat', args=['b'], dedup_key='d'),\n"
    "                          Dispatch('core.heartbeat', args=['c'], delay=60)])\n"
    "print(json.dumps([m.pk for m in events + tasks]))\n"
    "print(json.dumps([(m.available_at - m.created_at).total_seconds() for m in tasks]))\n"
)


def test_publish_many_and_enqueue_many_on_sqlite(tmp_path):
    """The embedded default writes batches too: in order, a held dedup_key returns its holder, delays kept."""
    assert _manage(tmp_path, "migrate", "--noinput").returncode == 0
    written = _manage(tmp_path, "shell", "-c", WRITE_MANY)
    assert written.returncode == 0, written.stderr
    ids_line, delays_line = written.stdout.strip().splitlines()[-2:]
    ids = json.loads(ids_line)
    assert ids[:3] == sorted(ids[:3]) and ids[3] == ids[4] and ids[5] > ids[3] > ids[2]
    assert json.loads(delays_line) == [0, 0, 60]

    relayed = _manage(tmp_path, "outbox_relay", "--once")
    assert relayed.returncode == 0, relayed.stderr
    assert relayed.stdout.strip() == "Published 4 message(s)."
