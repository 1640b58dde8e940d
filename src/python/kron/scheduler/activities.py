"""The scheduler's activities: the toolkit preflight, recording a fire (metrics and the ledger) and
observing a schedule for overlap skips. Everything that touches the outside world."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.api.workflowservice.v1 import ListScheduleMatchingTimesRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from kron.common.agents import AgentNotFound, AgentStore
from kron.common.logging import get_logger
from kron.common.mcp_connect import McpConnector, McpSettings
from kron.common.mcp_preflight import first_unavailable
from kron.common.schedules import ledger_id
from kron.common.toolkit_preflight import ToolkitRejected, check_connections
from kron.contracts.agents import AgentSpec
from kron.contracts.mcp import McpServers
from kron.contracts.models import AgentRef
from kron.contracts.schedules import (
    SCHEDULE_LEDGER_WORKFLOW,
    SIGNAL_LEDGER_RECORD,
    DispatchStatus,
    FireRecord,
    FireTrigger,
    LedgerConfig,
    LedgerInput,
    LedgerState,
    RecordFire,
)
from kron.scheduler.metrics import SchedulerMetrics
from kron.scheduler.preflight import LazyConnections

log = get_logger(__name__)

TOOLKIT_REJECTED = "toolkit_rejected"
# How far back an observation looks for the times of skipped fires.
MAX_OBSERVATION_WINDOW = timedelta(days=1)
MAX_CANDIDATE_TIMES = 200
# Temporal counts a skip a moment after its nominal time: an observation looks back this much
# before the previous one, so a skip counted late still finds its time.
OBSERVATION_OVERLAP = timedelta(seconds=10)
# A time within this of a started or recorded fire's is that fire (intervals are >= 1 s apart).
SAME_FIRE_TOLERANCE = timedelta(milliseconds=500)
MATCHING_TIMES_PAGE = 1000  # the server returns at most this many times per call


class PreflightInput(BaseModel):
    user_id: str
    toolkits: list[str]


class McpPreflightInput(BaseModel):
    servers: McpServers


class PreflightResult(BaseModel):
    ok: bool
    toolkit: str | None = None
    connect_url: str | None = None
    error: str | None = None


class ResolveAgentInput(BaseModel):
    owner: str
    ref: AgentRef


class ResolvedAgent(BaseModel):
    """The version a fire runs (both None: no such agent or version, or it was deleted)."""

    ref: AgentRef | None = None
    spec: AgentSpec | None = None


class RecordFireInput(BaseModel):
    schedule_id: str
    scheduler_task_queue: str
    record: FireRecord
    config: LedgerConfig


class ObserveInput(BaseModel):
    schedule_id: str
    skips_seen: int | None
    since: datetime | None
    # Nominal times the ledger already has records for (runs and skips): not candidates.
    known_times: list[datetime] = Field(default_factory=list)


class ObserveResult(BaseModel):
    exists: bool
    skipped_total: int = 0
    # Nominal times in (since, observed_at] at which no workflow started: where skips can have been.
    candidate_times: list[datetime] = Field(default_factory=list)
    observed_at: datetime


class SchedulerActivities:
    def __init__(
        self,
        client: Client,
        metrics: SchedulerMetrics,
        connections: LazyConnections,
        *,
        connect_callback_url: str | None = None,
        observe_interval_seconds: float = 15.0,
        mcp: McpConnector | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._connections = connections
        self._callback_url = connect_callback_url
        self._observe_interval_seconds = observe_interval_seconds
        self._mcp_settings = McpSettings()
        self._mcp = mcp or self._mcp_settings.connector()

    def all(self) -> list[Any]:
        return [
            self.check_toolkits, self.check_mcp_servers, self.record_fire, self.observe_schedule, self.resolve_agent,
        ]

    @activity.defn
    async def resolve_agent(self, input: ResolveAgentInput) -> ResolvedAgent:
        """The agent version a fire runs, read from the registry now (so no version: the latest at
        this fire). The registry not answering raises (Temporal retries)."""
        try:
            ref, version = await AgentStore(self._client).resolve(input.owner, input.ref)
        except AgentNotFound:
            return ResolvedAgent()
        return ResolvedAgent(ref=ref, spec=version.spec)

    @activity.defn
    async def check_mcp_servers(self, input: McpPreflightInput) -> PreflightResult:
        """Whether every MCP server answers and lists its tools with the run's credentials (read
        here, from this process's KRON_MCP_SECRETS_DIR and MCP_* environment)."""
        unavailable = await first_unavailable(
            self._mcp, input.servers, timeout_seconds=self._mcp_settings.preflight_timeout_seconds
        )
        if unavailable is None:
            return PreflightResult(ok=True)
        log.warning("MCP preflight failed", server=unavailable.server, reason=unavailable.reason)
        return PreflightResult(ok=False, error=unavailable.message + "; the next fire checks again")

    @activity.defn
    async def check_toolkits(self, input: PreflightInput) -> PreflightResult:
        """The first toolkit (in order) the user is not connected to, with a connect link. Composio
        errors raise (Temporal retries); a toolkit Composio refuses is a non-retryable error."""
        if not input.toolkits or not self._connections.enabled:
            return PreflightResult(ok=True)
        connections = await asyncio.to_thread(self._connections.get)
        try:
            check = await check_connections(connections, input.user_id, input.toolkits, callback_url=self._callback_url)
        except ToolkitRejected as rejected:
            raise ApplicationError(
                f"Toolkit {rejected.toolkit!r} cannot be connected", type=TOOLKIT_REJECTED, non_retryable=True
            ) from None
        except Exception as error:
            # The adapter redacts its key; the type is enough for the log. Temporal retries.
            log.warning("toolkit preflight failed", exc_type=type(error).__name__,
                        status_code=getattr(error, "status_code", None))
            raise
        if check.first is None:
            return PreflightResult(ok=True)
        toolkit = check.first.toolkit
        return PreflightResult(
            ok=False, toolkit=toolkit, connect_url=check.first.connect_url,
            error=f"{toolkit} is not connected: connect it (connect_url), the next fire will run",
        )

    @activity.defn
    async def record_fire(self, input: RecordFireInput) -> None:
        """Count the fire and hand its record to the schedule's ledger (signal-with-start: the
        ledger comes back if it is missing; it ends itself if the schedule is gone)."""
        record = input.record
        if record.outcome is None:  # the dispatch stage, reported once per fire
            self._metrics.fires.labels(record.trigger.value, record.dispatch.value).inc()
            if record.trigger is FireTrigger.SCHEDULE and record.scheduled_at is not None:
                self._metrics.lag.observe(max(0.0, (record.fired_at - record.scheduled_at).total_seconds()))
            if record.dispatch is DispatchStatus.PREFLIGHT_FAILED:
                reason = "not_connected" if record.connect_url else "unavailable"
                self._metrics.preflight_failures.labels(reason).inc()
        else:
            self._metrics.outcomes.labels(record.outcome.value).inc()
        await self._client.start_workflow(
            SCHEDULE_LEDGER_WORKFLOW,
            LedgerInput(
                schedule_id=input.schedule_id,
                config=input.config,
                observe_interval_seconds=self._observe_interval_seconds,
                state=LedgerState(),
            ),
            id=ledger_id(input.schedule_id),
            task_queue=input.scheduler_task_queue,
            start_signal=SIGNAL_LEDGER_RECORD,
            start_signal_args=[RecordFire(record=record, config=input.config)],
        )

    @activity.defn
    async def observe_schedule(self, input: ObserveInput) -> ObserveResult:
        """Temporal's overlap-skip count for the schedule and, when it grew, the nominal times since
        `since` at which nothing started (Temporal keeps counts, not the skipped times)."""
        now = datetime.now(UTC)
        try:
            description = await self._client.get_schedule_handle(input.schedule_id).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return ObserveResult(exists=False, observed_at=now)
            raise
        total = description.info.num_actions_skipped_overlap
        new = total - input.skips_seen if input.skips_seen is not None and total > input.skips_seen else 0
        if new == 0:
            return ObserveResult(exists=True, skipped_total=total, observed_at=now)
        self._metrics.skips.inc(new)
        since = input.since - OBSERVATION_OVERLAP if input.since else description.info.created_at
        since = max(since, now - MAX_OBSERVATION_WINDOW)
        taken = [a.scheduled_at for a in description.info.recent_actions] + list(input.known_times)
        candidates = [
            t for t in await self._matching_times(input.schedule_id, since, now)
            if since < t <= now and all(abs(t - s) > SAME_FIRE_TOLERANCE for s in taken)
        ]
        return ObserveResult(
            exists=True, skipped_total=total, candidate_times=candidates[-MAX_CANDIDATE_TIMES:], observed_at=now
        )

    async def _matching_times(self, schedule: str, start: datetime, end: datetime) -> list[datetime]:
        """The spec's times in [start, end], oldest first (the server pages from the start)."""
        times: list[datetime] = []
        for _ in range(20):
            request = ListScheduleMatchingTimesRequest(namespace=self._client.namespace, schedule_id=schedule)
            request.start_time.FromDatetime(start)
            request.end_time.FromDatetime(end)
            response = await self._client.workflow_service.list_schedule_matching_times(request)
            page = [t.ToDatetime(tzinfo=UTC) for t in response.start_time]
            times.extend(t for t in page if not times or t > times[-1])
            if len(page) < MATCHING_TIMES_PAGE:
                break
            start = page[-1]
        return times
