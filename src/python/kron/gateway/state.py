"""What one gateway app holds between requests: the Temporal client, metrics, the rate limiter and
the preflight adapter. Nothing about tasks: Temporal is the only store."""

from __future__ import annotations

from dataclasses import dataclass

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

    async def aclose(self) -> None:
        await self.preflight.aclose()
