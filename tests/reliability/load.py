"""Clients placing orders over HTTP as a careful API user does: one Idempotency-Key per order, and bounded retries
of the same request (same key, same body) on connection errors, 5xx, 409 and 429."""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field

import requests

RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


@dataclass
class Placement:
    """What one client saw for one order: every attempt's outcome and, on success, the order it names."""

    key: str
    sku: str
    body: str
    attempts: list[str] = field(default_factory=list)  # "201", "409", "ConnectionError", …
    status: int | None = None  # the final HTTP status, None when the client gave up without an answer
    order_id: int | None = None
    replayed: bool = False  # the 2xx was a replay of an earlier execution (Idempotent-Replayed)
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def backoff(attempt: int, retry_after: str | None) -> float:
    """Seconds before the next attempt: the server's Retry-After (capped), else capped full jitter."""
    if retry_after and retry_after.isdigit():
        return min(float(retry_after), 5.0)
    return random.uniform(0, min(2.0, 0.1 * 2 ** attempt))


class OrderLoad:
    """Clients placing orders at about ``rate`` per second until stopped, each order retried up to a bound."""

    def __init__(self, base_url: str, api_key: str, *, prefix: str, clients: int = 4, rate: float = 30.0,
                 max_attempts: int = 60, give_up_after: float = 90.0) -> None:
        self.base_url, self.api_key, self.prefix = base_url, api_key, prefix
        self.rate, self.max_attempts, self.give_up_after = rate, max_attempts, give_up_after
        self.placements: list[Placement] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True, name=f"client-{n}") for n in range(clients)]
        self.started = 0.0
        self.errors: list[BaseException] = []

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        """Place no new orders; wait for the clients to finish (or give up on) the ones they hold."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self._threads), "the clients to finish"
        assert not self.errors, self.errors

    def finished(self) -> int:
        """How many orders have a final answer (success or not)."""
        return sum(1 for placement in list(self.placements) if placement.status is not None or placement.error)

    def failed_attempts(self) -> int:
        """Attempts so far that got no 2xx or final answer (errors, 5xx, 409, 429): what an outage shows clients."""
        return sum(1 for placement in list(self.placements) for outcome in list(placement.attempts)
                   if not outcome.isdigit() or int(outcome) in RETRYABLE_STATUSES)

    def _take(self) -> Placement | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            index = len(self.placements)
            key = f"{self.prefix}-{index:05d}"
            # The SKU carries the key: an order that exists twice for one key is visible in the database.
            placement = Placement(key=key, sku=key, body=json.dumps({"sku": key, "quantity": 1 + index % 5}))
            self.placements.append(placement)
        # Load shaping, not waiting for a condition: the n-th order does not start before n / rate.
        ahead = index / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)
        return placement

    def _run(self) -> None:
        session = requests.Session()
        session.headers.update({"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        try:
            while (placement := self._take()) is not None:
                self._place(session, placement)
        except BaseException as exc:  # surfaced by join(), not lost in the thread
            self.errors.append(exc)
        finally:
            session.close()

    def _place(self, session: requests.Session, placement: Placement) -> None:
        deadline = time.monotonic() + self.give_up_after
        for attempt in range(self.max_attempts):
            retry_after = None
            try:
                response = session.post(f"{self.base_url}/api/orders/", data=placement.body, timeout=(3, 20),
                                        headers={"Idempotency-Key": placement.key})
            except requests.RequestException as exc:  # refused, reset, timed out: the request may have run
                placement.attempts.append(type(exc).__name__)
            else:
                placement.attempts.append(str(response.status_code))
                if response.status_code not in RETRYABLE_STATUSES:
                    placement.status = response.status_code
                    if placement.succeeded:
                        placement.order_id = response.json()["id"]
                        placement.replayed = response.headers.get("Idempotent-Replayed") == "true"
                    else:
                        placement.error = response.text[:500]
                    return
                retry_after = response.headers.get("Retry-After")
            if time.monotonic() > deadline:
                break
            time.sleep(backoff(attempt, retry_after))
        placement.error = f"gave up after {len(placement.attempts)} attempts: {placement.attempts[-5:]}"
