"""What one gateway app holds between requests: settings, metrics, the rate limiter, the preflight
adapter, the cursor codec and, once Temporal is connected, the stores that talk to it. Nothing about
tasks: Temporal is the only store. Routes get it (and its parts) through `deps`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client

from kron.common.mcp_connect import McpConnector
from kron.common.schedules import ScheduleSettings, ScheduleStore
from kron.common.transcripts import TranscriptStore
from kron.gateway.cursors import CursorCodec
from kron.gateway.metrics import GatewayMetrics
from kron.gateway.preflight import Preflight
from kron.gateway.ratelimit import TokenBucketLimiter
from kron.gateway.runs import RunStore
from kron.gateway.settings import GatewaySettings


@dataclass
class GatewayState:
    settings: GatewaySettings
    schedule_settings: ScheduleSettings  # the `KRON_*` settings the scheduler must agree with
    metrics: GatewayMetrics
    dispatch_limiter: TokenBucketLimiter
    preflight: Preflight
    cursors: CursorCodec
    # Where runs keep their conversations (`KRON_TRANSCRIPT_*`, as the worker reads them): the
    # gateway only deletes from it.
    transcripts: TranscriptStore
    mcp: McpConnector  # the MCP preflight's connection pool (KRON_MCP_SECRETS_DIR for header values)
    # Set by `attach` once Temporal is connected (the lifespan); None until then (routes answer 503).
    client: Client | None = None
    runs: RunStore | None = None
    schedules: ScheduleStore | None = None

    def attach(self, client: Client) -> None:
        rpc_timeout = timedelta(seconds=self.settings.temporal_rpc_timeout_seconds)
        self.runs = RunStore(
            client,
            task_queue=self.settings.task_queue,
            rpc_timeout=rpc_timeout,
            query_timeout=timedelta(seconds=self.settings.query_timeout_seconds),
        )
        self.schedules = ScheduleStore(
            client, self.schedule_settings, agent_task_queue=self.settings.task_queue, rpc_timeout=rpc_timeout
        )
        self.client = client  # last: readiness and the stores' dependencies look at it

    async def aclose(self) -> None:
        await self.preflight.aclose()
        await self.transcripts.aclose()
        await self.mcp.aclose()
