"""Idempotency-Key against a real gunicorn server: concurrent duplicates, replays, and a kill -9 after commit.

The server runs ``tests.apps.idempotency.crash_wsgi:application`` (settings.wsgi's application, plus a
test-only way to die between commit and reply) on the pytest test database, with 2 workers × 8 threads
so duplicates really race across processes and connections.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from apps.core.api_keys import api_key_create
from apps.idempotency.models import IdempotencyRecord
from apps.orders.models import Order
from apps.outbox.models import OutboxMessage
from tests.helpers import free_port, stop_process_group, wait_until
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = {"sku": "BOOK-1", "quantity": 3}
CONCURRENT = 50
PROBLEM = "application/problem+json"


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def gunicorn(tmp_path):
    """Start a gunicorn server on the test database (call it again after a crash); all are stopped at the end."""
    started: list[Server] = []

    def start(**env: str) -> Server:
        port = free_port()
        log_path = tmp_path / f"gunicorn-{len(started)}.log"
        command = [sys.executable, "-m", "gunicorn", "tests.apps.idempotency.crash_wsgi:application",
                   "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8",
                   "--worker-tmp-dir", "/dev/shm", "--graceful-timeout", "5", "--timeout", "60"]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=process_env(LOG_LEVEL="WARNING", **env), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        server = Server(process, port, log_path)
        started.append(server)
        wait_until(lambda: _live(server), timeout=60, interval=0.1,
                   message=f"gunicorn to answer /health/live (log {log_path})")
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            stop_process_group(server.process, sig=signal.SIGINT, timeout=20)


def _live(server: Server) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"gunicorn exited with {server.process.returncode}:\n{server.log_tail()}")
    return requests.get(server.url("/health/live"), timeout=2).status_code == 200


def _headers(api_key: str, key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Idempotency-Key": key, **extra}


def _replayed(response: requests.Response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


@pytest.mark.parametrize("wait_ms", [0, 20_000], ids=["answer-409-at-once", "wait-for-the-first"])
def test_fifty_concurrent_duplicates_place_one_order_and_answer_201_replay_or_409(gunicorn, api_key, wait_ms):
    server = gunicorn(IDEMPOTENCY_WAIT_MS=str(wait_ms))
    barrier = threading.Barrier(CONCURRENT)

    def send(_: int) -> requests.Response:
        barrier.wait(timeout=30)
        return requests.post(server.url("/api/orders/"), json=ORDER, headers=_headers(api_key, "burst-1"),
                             timeout=60)

    with ThreadPoolExecutor(CONCURRENT) as pool:
        responses = list(pool.map(send, range(CONCURRENT)))

    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= ({201} if wait_ms else {201, 409}), f"{statuses}\n{server.log_tail()}"
    originals = [r for r in responses if r.status_code == 201 and not _replayed(r)]
    assert len(originals) == 1, statuses
    original = originals[0]
    for response in responses:
        assert response.headers["Idempotency-Key"] == "burst-1"
        if response is original:
            continue
        if response.status_code == 201:
            assert _replayed(response)
            assert response.content == original.content
            assert response.headers["Location"] == original.headers["Location"]
            assert response.headers["Content-Type"] == original.headers["Content-Type"]
        else:
            assert response.headers["Content-Type"] == PROBLEM
            assert response.headers["Retry-After"] == "1"
            assert response.json()["type"] == "urn:taskplane:problem:idempotency-key-in-flight"

    assert Order.objects.count() == 1
    assert Order.objects.get().pk == original.json()["id"]
    assert OutboxMessage.objects.filter(name="order.placed").count() == 1
    assert IdempotencyRecord.objects.get(key="burst-1").state == IdempotencyRecord.State.COMPLETED
    # Whatever raced, the settled answer is the original's.
    late = requests.post(server.url("/api/orders/"), json=ORDER, headers=_headers(api_key, "burst-1"), timeout=10)
    assert late.status_code == 201 and _replayed(late) and late.content == original.content


def test_replay_mismatch_and_per_user_scope_over_http(gunicorn, api_key, other_user):
    server = gunicorn()
    url = server.url("/api/orders/")

    first = requests.post(url, json=ORDER, headers=_headers(api_key, "k-1"), timeout=10)
    replay = requests.post(url, json=ORDER, headers=_headers(api_key, "k-1"), timeout=10)
    mismatch = requests.post(url, json={**ORDER, "quantity": 4}, headers=_headers(api_key, "k-1"), timeout=10)
    other_key = api_key_create(username=other_user.username)[1]
    theirs = requests.post(url, json=ORDER, headers=_headers(other_key, "k-1"), timeout=10)

    assert first.status_code == 201 and not _replayed(first)
    assert replay.status_code == 201 and _replayed(replay)
    assert replay.content == first.content
    assert replay.headers["Location"] == first.headers["Location"]
    assert mismatch.status_code == 422
    assert mismatch.headers["Content-Type"] == PROBLEM
    assert mismatch.json()["type"] == "urn:taskplane:problem:idempotency-key-reused"
    assert theirs.status_code == 201 and not _replayed(theirs)
    assert theirs.json()["id"] != first.json()["id"]
    assert [r.headers["Idempotency-Key"] for r in (first, replay, mismatch, theirs)] == ["k-1"] * 4
    assert sorted(Order.objects.values_list("owner__username", flat=True)) == ["alice", "bob"]
    assert OutboxMessage.objects.filter(name="order.placed").count() == 2


def test_kill_9_after_commit_before_reply_then_the_retry_gets_the_stored_response(gunicorn, api_key):
    server = gunicorn()

    with pytest.raises(requests.ConnectionError):
        requests.post(server.url("/api/orders/"), json=ORDER,
                      headers=_headers(api_key, "crash-1", **{"X-Test-Crash": "after-commit"}), timeout=30)
    wait_until(lambda: server.process.poll() is not None, timeout=10, message="the gunicorn master to be killed")
    assert server.process.returncode == -9, server.log_tail()

    # The view's writes and the stored response committed together before the kill.
    order = Order.objects.get()
    record = IdempotencyRecord.objects.get(key="crash-1")
    assert record.state == IdempotencyRecord.State.COMPLETED and record.response_status == 201

    restarted = gunicorn()
    # Same method, path, content type and body: the crash header is not part of the fingerprint.
    retry = requests.post(restarted.url("/api/orders/"), json=ORDER, headers=_headers(api_key, "crash-1"), timeout=10)

    assert retry.status_code == 201, retry.text
    assert _replayed(retry)
    assert retry.json()["id"] == order.pk
    assert retry.headers["Location"].endswith(f"/api/orders/{order.pk}/")
    assert Order.objects.count() == 1
    assert OutboxMessage.objects.filter(name="order.placed").count() == 1


def _post_raw(server: Server, api_key: str, keys: list[str]) -> tuple[int, dict[str, str], bytes]:
    """POST an order with one ``Idempotency-Key`` header line per entry of ``keys`` (requests cannot repeat one)."""
    body = json.dumps(ORDER).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("POST", "/api/orders/")
        conn.putheader("Authorization", f"Bearer {api_key}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        for key in keys:
            conn.putheader("Idempotency-Key", key)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("keys", [["a", "b"], ["a", "a"], ['"a"', '"b"'], ["a, b"]],
                         ids=["two-bare", "the-same-twice", "two-quoted", "bare-with-a-comma"])
def test_repeated_idempotency_key_headers_are_a_400_not_one_joined_key(gunicorn, api_key, keys):
    """issue 15 §0: gunicorn joins repeated header lines with a comma, and the two keys were taken as one
    key "a,b". A bare key cannot contain a comma now, so a list of keys is refused, whatever its form."""
    server = gunicorn()

    status, headers, body = _post_raw(server, api_key, keys)

    assert status == 400, body
    assert headers["content-type"] == PROBLEM
    problem = json.loads(body)
    assert problem["type"] == "urn:taskplane:problem:idempotency-key-malformed"
    assert "one Idempotency-Key" in problem["detail"]
    assert "idempotency-key" not in headers
    assert not Order.objects.exists() and not IdempotencyRecord.objects.exists()


def test_a_comma_inside_a_quoted_key_is_one_key(gunicorn, api_key):
    """The structured-field form can carry a comma: it is one key, and a retry replays."""
    server = gunicorn()

    first = _post_raw(server, api_key, ['"a,b"'])
    retry = _post_raw(server, api_key, ['"a,b"'])

    assert first[0] == retry[0] == 201, first[2]
    assert retry[1]["idempotent-replayed"] == "true" and retry[2] == first[2]
    assert IdempotencyRecord.objects.get().key == "a,b"
