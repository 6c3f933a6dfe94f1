"""Per-client rate limiting with a token bucket (``rate`` requests a second, bursts of ``burst``)."""

from __future__ import annotations

import time


class RateLimiter:
    """Token buckets keyed by client; :meth:`wait` says how long a refused client should wait."""

    def __init__(self, rate: float, burst: float | None = None, *, max_clients: int = 10_000) -> None:
        if rate <= 0:
            raise ValueError("the rate limit must be a positive number of requests per second")
        self.rate, self.burst = rate, burst if burst is not None else max(1.0, 2 * rate)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, time of last update)

    def wait(self, client: str) -> float:
        """0 if ``client`` may go ahead now (taking a token), else the seconds until it may."""
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_clients and client not in self._buckets:
            # forget buckets that have refilled completely: they hold no state worth keeping
            full = [k for k, (t, seen) in self._buckets.items() if t + (now - seen) * self.rate >= self.burst]
            for k in full:
                del self._buckets[k]
        if tokens >= 1:
            self._buckets[client] = (tokens - 1, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate
