"""What one gateway app holds between requests: the Temporal client, metrics, the rate limiter, the
preflight adapter and the hard-cancel timers. Nothing about tasks: Temporal is the only store."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client

from kron.gateway.metrics import GatewayMetrics
from kron.gateway.preflight import Preflight
from kron.gateway.ratelimit import TokenBucketLimiter
from kron.gateway.runs import CursorCodec
from kron.gateway.settings import GatewaySettings


@dataclass
class GatewayState:
    settings: GatewaySettings
    metrics: GatewayMetrics
    dispatch_limiter: TokenBucketLimiter
    preflight: Preflight
    cursors: CursorCodec
    client: Client | None = None  # set by the lifespan
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` after the response; held here so it is neither garbage-collected nor leaked."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        # Pending hard cancels die with the process: the graceful `cancel` signal already went out.
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.preflight.aclose()
