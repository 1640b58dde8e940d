from __future__ import annotations

import pytest

from kron.gateway.ratelimit import ConcurrencyLimiter, TokenBucketLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_second=2.0, burst=3, clock=clock)
    assert [limiter.acquire("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("alice") == 0.5  # one token takes 0.5 s at 2/s
    clock.now += 0.5
    assert limiter.acquire("alice") == 0.0
    assert limiter.acquire("bob") == 0.0  # buckets are per key


def test_idle_full_buckets_are_forgotten_past_max_keys() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_second=1.0, burst=1, clock=clock, max_keys=10)
    for i in range(10):
        limiter.acquire(f"user-{i}")
    clock.now += 5  # every bucket refilled
    limiter.acquire("newcomer")
    assert len(limiter._buckets) == 1


def test_a_call_may_name_its_keys_own_rate_and_burst() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_second=1.0, burst=1, clock=clock)
    assert [limiter.acquire("admin", rate_per_second=10.0, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("admin", rate_per_second=10.0, burst=3) == pytest.approx(0.1)
    assert limiter.acquire("user") == 0.0 and limiter.acquire("user") == 1.0


def test_concurrency_limiter_holds_at_most_the_limit_per_key() -> None:
    streams = ConcurrencyLimiter()
    assert streams.try_acquire("alice", 2) and streams.try_acquire("alice", 2)
    assert not streams.try_acquire("alice", 2)
    assert streams.try_acquire("bob", 2)
    streams.release("alice")
    assert streams.try_acquire("alice", 2)
    for _ in range(2):
        streams.release("alice")
    assert streams.held("alice") == 0 and "alice" not in streams._held
