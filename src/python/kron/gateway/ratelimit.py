"""Per-key token buckets in memory (per gateway process: N replicas allow N times the rate)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucketLimiter:
    """`burst` requests at once per key, refilled at `rate_per_second`.

    Idle keys whose bucket has refilled are forgotten once more than `max_keys` are tracked, so
    memory stays bounded however many users come and go.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated_at)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available."""
        now = self._clock()
        with self._lock:
            tokens, updated_at = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - updated_at) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > self._max_keys:
                    self._forget_full_buckets(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate

    def _forget_full_buckets(self, now: float) -> None:
        self._buckets = {
            key: (tokens, updated_at)
            for key, (tokens, updated_at) in self._buckets.items()
            if tokens + (now - updated_at) * self._rate < self._burst
        }
