"""The rate limit of API keys: a token bucket per key, kept in memory."""

from __future__ import annotations

import time


class RateLimiter:
    """A token bucket per key: ``rate`` calls a second on average, bursts up to ``burst``.

    Per server process: behind N replicas a key gets up to N times the rate.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def wait_time(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else seconds until there is."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate
