from __future__ import annotations

import time

import pytest

from kron_testing.polling import eventually


async def test_it_retries_until_the_check_passes_and_returns_its_value() -> None:
    calls = 0

    async def check() -> int:
        nonlocal calls
        calls += 1
        assert calls >= 3, "not yet"
        return calls

    assert await eventually(check, timeout=5, interval=0.01) == 3


async def test_after_the_timeout_the_last_assertion_propagates() -> None:
    async def check() -> None:
        raise AssertionError("never")

    started = time.monotonic()
    with pytest.raises(AssertionError, match="never"):
        await eventually(check, timeout=0.2, interval=0.01)
    assert time.monotonic() - started >= 0.2


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def check() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("broken")

    with pytest.raises(ValueError):
        await eventually(check, timeout=5)
    assert calls == 1
