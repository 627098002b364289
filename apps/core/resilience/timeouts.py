"""Explicit timeouts: nothing in the kit waits without a bound, and callers get the tools to do the same."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class HttpTimeout:
    """Connect and read timeouts of one HTTP attempt, in seconds (read: the gap between bytes)."""

    connect: float
    read: float

    def __post_init__(self) -> None:
        if not (self.connect > 0 and self.read > 0):
            raise ValueError("HTTP timeouts must be positive numbers of seconds; None would wait forever")

    @classmethod
    def of(cls, value: float | tuple[float, float] | HttpTimeout) -> HttpTimeout:
        """Accept seconds (both timeouts), a (connect, read) pair, or an HttpTimeout."""
        if isinstance(value, HttpTimeout):
            return value
        if isinstance(value, tuple):
            connect, read = value
            return cls(float(connect), float(read))
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls(float(value), float(value))
        raise TypeError(f"timeout must be seconds or a (connect, read) pair, not {value!r}")

    def as_requests(self) -> tuple[float, float]:
        """The form requests takes."""
        return (self.connect, self.read)

    def capped(self, deadline: Deadline) -> HttpTimeout:
        """These timeouts, shortened so an attempt cannot outlive ``deadline``."""
        left = max(deadline.remaining(), 0.001)
        return HttpTimeout(min(self.connect, left), min(self.read, left))


class Deadline:
    """A point in (monotonic) time by which a whole piece of work must be done."""

    def __init__(self, seconds: float) -> None:
        self.expires_at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return time.monotonic() >= self.expires_at

    def check(self) -> None:
        """Raise TimeoutError once the deadline has passed."""
        if self.expired():
            raise TimeoutError("deadline exceeded")
