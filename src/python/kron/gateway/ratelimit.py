"""Per-key token buckets in memory (per gateway process: N replicas allow N times the rate), and
per-key counts of things held open at once (event streams)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucketLimiter:
    """`burst` requests at once per key, refilled at `rate_per_second`; a call may name other
    values for its key (per-user limits, kron.common.user_limits).

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
        # key -> (tokens, updated_at, rate, burst)
        self._buckets: dict[str, tuple[float, float, float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, *, rate_per_second: float | None = None, burst: int | None = None) -> float:
        """Take one token: 0.0 if allowed, else the seconds until one is available."""
        rate = self._rate if rate_per_second is None else rate_per_second
        size = self._burst if burst is None else float(burst)
        now = self._clock()
        with self._lock:
            tokens, updated_at, _, _ = self._buckets.get(key, (size, now, rate, size))
            tokens = min(size, tokens + (now - updated_at) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now, rate, size)
                if len(self._buckets) > self._max_keys:
                    self._forget_full_buckets(now)
                return 0.0
            self._buckets[key] = (tokens, now, rate, size)
            return (1.0 - tokens) / rate

    def _forget_full_buckets(self, now: float) -> None:
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if bucket[0] + (now - bucket[1]) * bucket[2] < bucket[3]
        }


class ConcurrencyLimiter:
    """At most `limit` held at once per key (the limit given on each `try_acquire`: per-user
    limits). Keys holding nothing are forgotten."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def try_acquire(self, key: str, limit: int) -> bool:
        with self._lock:
            held = self._held.get(key, 0)
            if held >= limit:
                return False
            self._held[key] = held + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            held = self._held.get(key, 0) - 1
            if held > 0:
                self._held[key] = held
            else:
                self._held.pop(key, None)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)
