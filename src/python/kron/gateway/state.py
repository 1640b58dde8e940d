"""What one gateway app holds between requests: settings, metrics, the rate limiter, the preflight
adapter, the cursor codec and, once Temporal is connected, the stores that talk to it. Nothing about
tasks: Temporal is the only store. Routes get it (and its parts) through `deps`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.client import Client

from kron.common.agents import AgentStore
from kron.common.mcp_connect import McpConnector
from kron.common.schedules import ScheduleSettings, ScheduleStore
from kron.common.transcripts import TranscriptStore
from kron.common.user_limits import UserLimits
from kron.gateway.cursors import CursorCodec
from kron.gateway.metrics import GatewayMetrics
from kron.gateway.preflight import Preflight
from kron.gateway.ratelimit import ConcurrencyLimiter, TokenBucketLimiter
from kron.gateway.runs import RunStore
from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import Identity, TokenVerifier


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
    # Checks bearer tokens (kron.gateway.tokens): OIDC/JWKS or HS256, by the settings.
    verifier: TokenVerifier
    mcp: McpConnector  # the MCP preflight's connection pool (KRON_MCP_SECRETS_DIR for header values)
    # Event streams open per user (GET /tasks/{id}/events), against their `max_streams`.
    streams: ConcurrencyLimiter = field(default_factory=ConcurrencyLimiter)
    # Set by `attach` once Temporal is connected (the lifespan); None until then (routes answer 503).
    client: Client | None = None
    runs: RunStore | None = None
    schedules: ScheduleStore | None = None
    agents: AgentStore | None = None

    def limits(self, caller: Identity) -> UserLimits:
        """The caller's per-user limits (settings defaults, role and user overrides)."""
        return self.settings.limits_for(caller.user_id, caller.roles)

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
        # Agent reads and changes need the scheduler's worker (it hosts the registries): as long as a query.
        self.agents = AgentStore(
            client,
            scheduler_task_queue=self.schedule_settings.scheduler_task_queue,
            rpc_timeout=timedelta(seconds=self.settings.query_timeout_seconds),
        )
        self.client = client  # last: readiness and the stores' dependencies look at it

    async def aclose(self) -> None:
        await self.preflight.aclose()
        await self.transcripts.aclose()
        await self.verifier.aclose()
        await self.mcp.aclose()
