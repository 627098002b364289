"""A payment provider for tests: a real HTTP server on loopback speaking the payments protocol.

It is what the checkout's client talks to wherever a test needs a provider other than the sandbox (the
sandbox is the embedded default's, served by the web process). Charges and refunds are idempotent by
Idempotency-Key like a real provider's; a test scripts failures (``fail_next``), declines (an amount
ending in 13, as the sandbox, or ``decline_orders``) and slow answers (``delay_next``), and reads what
arrived (``requests``, ``charges``, ``refunds``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    key: str
    body: dict[str, Any]
    status: int


@dataclass
class _State:
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)  # Idempotency-Key → {"id", "declined", …}
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    failures: dict[str, list[int]] = field(default_factory=dict)  # path → statuses to answer first
    delays: dict[str, list[float]] = field(default_factory=dict)  # path → seconds to wait before answering
    declined_orders: set[int] = field(default_factory=set)
    declined_every: int = 0  # decline every order whose id is a multiple of this (0: none)
    failing_every: int = 0  # answer 503 to the first charge request of orders with id % this == 1 (0: none)
    failed_once: set[str] = field(default_factory=set)  # Idempotency-Keys already answered that 503


class PaymentStub:
    """The server and its scripted behaviour; thread-safe (the server answers on its own threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = _State()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                status, answer, delay = stub._answer(self.path.rstrip("/").rsplit("/", 1)[-1],
                                                     self.headers.get("Idempotency-Key", ""), body)
                if delay:
                    time.sleep(delay)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args: Any) -> None:
                pass  # tests print nothing

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, name="payment-stub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self._lock:
            self._state = _State()

    def fail_next(self, path: str, *statuses: int) -> None:
        """Answer the next requests to ``path`` ("charges" or "refunds") with these statuses, before acting."""
        with self._lock:
            self._state.failures.setdefault(path, []).extend(statuses)

    def delay_next(self, path: str, *seconds: float) -> None:
        """Act on the next requests to ``path``, then wait this long before answering (a client timeout)."""
        with self._lock:
            self._state.delays.setdefault(path, []).extend(seconds)

    def decline_orders(self, *order_ids: int) -> None:
        with self._lock:
            self._state.declined_orders.update(order_ids)

    def misbehave(self, *, declined_every: int = 0, failing_every: int = 0) -> None:
        """Decline every ``declined_every``-th order and fail the first charge request of every
        ``failing_every``-th (offset by one) with a 503, by order id; zeros (the default) stop both."""
        with self._lock:
            self._state.declined_every, self._state.failing_every = declined_every, failing_every

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._state.requests)

    def charges(self, *, declined: bool = False) -> list[dict[str, Any]]:
        """Charges made (or declined), one per Idempotency-Key."""
        with self._lock:
            return [dict(c) for c in self._state.charges.values() if c["declined"] == declined]

    def refunds(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._state.refunds.values()]

    def _answer(self, path: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        with self._lock:
            state = self._state
            delay = state.delays[path].pop(0) if state.delays.get(path) else 0.0
            if state.failures.get(path):
                status = state.failures[path].pop(0)
                state.requests.append(Received(path, key, body, status))
                return status, {"error": "scripted failure"}, delay
            if not key:
                status, answer = 400, {"error": "Idempotency-Key required"}
            elif path == "charges" and self._fails_first(key, body):
                status, answer = 503, {"error": "temporarily unavailable"}
            elif path == "charges":
                status, answer = self._charge(key, body)
            elif path == "refunds":
                status, answer = self._refund(key, body)
            else:
                status, answer = 404, {"error": "no such endpoint"}
            state.requests.append(Received(path, key, body, status))
            return status, answer, delay

    def _fails_first(self, key: str, body: dict[str, Any]) -> bool:
        every, order_id = self._state.failing_every, body.get("order_id")
        if not every or not isinstance(order_id, int) or order_id % every != 1 or key in self._state.failed_once:
            return False
        self._state.failed_once.add(key)
        return True

    def _charge(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        charge = self._state.charges.get(key)
        if charge is None:
            order_id, every = body.get("order_id"), self._state.declined_every
            declined = (int(body.get("amount_cents", 0)) % 100 == 13 or order_id in self._state.declined_orders
                        or bool(every and isinstance(order_id, int) and order_id % every == 0))
            charge = self._state.charges[key] = {"id": f"ch_{uuid.uuid4().hex}", "key": key, "declined": declined,
                                                 **body}
        return (402, {"error": "declined"}) if charge["declined"] else (201, {"id": charge["id"]})

    def _refund(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        refund = self._state.refunds.get(key)
        if refund is None:
            if not any(c["id"] == body.get("charge_id") and not c["declined"] for c in self._state.charges.values()):
                return 404, {"error": "no such charge"}
            refund = self._state.refunds[key] = {"id": f"re_{uuid.uuid4().hex}", "key": key, **body}
        return 201, {"id": refund["id"]}
