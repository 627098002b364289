"""Small test helpers: waiting on conditions with deadlines, free ports, process control."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], *, timeout: float, interval: float = 0.1, message: str = "") -> T:
    """Poll ``condition`` until it returns something truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as exc:  # the condition may fail until the system is ready
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {message or condition}; last error: {last_error!r}")


def free_port() -> int:
    """Return a TCP port on loopback that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
    """Signal the process group of ``process`` and wait; SIGKILL it if it does not stop in time."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        raise


def group_alive(pgid: int) -> bool:
    """True while any process of the group still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
