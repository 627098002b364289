"""The one backoff rule of the platform: exponential growth, capped, with full jitter.

Full jitter (a uniform draw between zero and the ceiling) spreads retries of many callers that
failed together, so they do not return together (AWS Architecture Blog, "Exponential Backoff And
Jitter"). The relay, task retries and the resilience kit's RetryPolicy all wait this way.
"""

from __future__ import annotations

import random


def full_jitter_delay(retry_number: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry ``retry_number`` (0 for the first): uniform in [0, min(cap, base * 2**n)]."""
    ceiling = min(cap, base * 2 ** max(0, retry_number))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security
