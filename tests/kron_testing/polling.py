"""Waiting for what becomes true eventually (Temporal visibility, schedule fires, ledgers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.1) -> T:
    """Retry `check` until it stops raising AssertionError, and return what it returns; after
    `timeout` seconds the last AssertionError propagates."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(interval)
