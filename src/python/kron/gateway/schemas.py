"""Request and response bodies of the HTTP API (the run and schedule models themselves come from
contracts)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from kron.common.schedules import ScheduleSummary, ScheduleView
from kron.contracts.mcp import McpServers
from kron.contracts.models import (
    DEFAULT_BUDGET_PAUSE_SECONDS,
    DNS_LABEL_PATTERN,
    AgentRef,
    BudgetPause,
    CacheTTL,
    PendingApproval,
    PendingUnknownOutcome,
    RunError,
    RunStatus,
    StepRecord,
    StrictBudgetUsd,
    UnknownOutcomeAction,
    Usage,
)
from kron.contracts.schedules import ConcurrencyPolicy, FireRecord, RunTemplate, ScheduleTiming
from kron.contracts.webhooks import RunWebhookEvents
from kron.gateway.tokens import USER_ID_PATTERN

ToolkitSlug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
TaskId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=USER_ID_PATTERN, description="Who the token is for (becomes `sub`).")


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")


class DispatchRequest(BaseModel):
    """A run to start. Limits beyond these static bounds (model names, budget and iteration caps)
    come from the gateway's settings and are checked when the request arrives."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"goal": "Open an issue about the flaky test", "toolkits": ["github"]}]
        },
    )

    goal: str = Field(min_length=1, max_length=32_000)
    # A run of an agent definition (GET /agents): the fields below override the agent's where
    # allowed (limits only tighten, toolkits only narrow: 422 otherwise).
    agent: str | None = Field(default=None, pattern=DNS_LABEL_PATTERN, description="Run this agent.")
    version: StrictInt | None = Field(default=None, ge=1, description="The agent's version (default: its latest).")
    toolkit: ToolkitSlug | None = Field(default=None, description="Shorthand for one toolkit.")
    toolkits: list[ToolkitSlug] = Field(default_factory=list, max_length=32)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    # Strict: `true` or "10" is a mistake in the request, not a number to guess at.
    max_iterations: StrictInt | None = Field(default=None, ge=1, le=1000)
    budget: StrictInt | None = Field(default=None, ge=1, le=10**12, description="Token budget for the run.")
    # Checked (and normalised) by `kron.common.callback_urls`, like a schedule's: one validator.
    callback_url: str | None = Field(
        default=None, min_length=1, max_length=2083, json_schema_extra={"format": "uri"},
        description="Receives the run's webhooks (Standard Webhooks: `webhook-id`, `webhook-timestamp`, "
        "`webhook-signature`; the types in `webhook_events`), a public http(s) URL.",
    )
    approval_required: list[ToolkitSlug] = Field(
        default_factory=list,
        max_length=64,
        description="Toolkits (`github`) or tool slugs (`GMAIL_SEND_EMAIL`) whose calls wait for "
        "`POST /tasks/{id}/approve` or `/deny` before they run.",
    )
    approval_timeout_seconds: StrictInt = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="Undecided calls are denied after this."
    )
    cache_ttl: CacheTTL | None = Field(
        default=None, description="Prompt-cache lifetime; default: the worker's (5m, 1h after a long wait)."
    )
    budget_usd: StrictBudgetUsd | None = Field(
        default=None,
        description="USD the run may spend on model calls. Reached, the run pauses (status `paused`) "
        "before its next model call until `PATCH /tasks/{id}` raises it.",
    )
    budget_pause_timeout_seconds: StrictInt = Field(
        default=DEFAULT_BUDGET_PAUSE_SECONDS, ge=1, le=30 * 24 * 3600,
        description="A run paused at a budget ends as `budget_exceeded` when no higher one comes within this.",
    )
    unknown_outcome_timeout_seconds: StrictInt = Field(
        default=3600, ge=1, le=7 * 24 * 3600,
        description="An unsafe tool call whose outcome is unknown waits this long for "
        "`POST /tasks/{id}/resolve`, then is skipped.",
    )
    mcp_servers: McpServers = Field(
        default_factory=list,
        description="MCP servers (streamable HTTP) whose tools the run may call, as `mcp__<name>__<tool>`. "
        "URLs must be on the operator's allow-list (KRON_MCP_URL_ALLOWLIST); header values are "
        "references (`{env: MCP_...}` or `{secret_key_ref: {name, key}}`), never literal values.",
    )
    webhook_events: RunWebhookEvents | None = Field(
        default=None,
        description="Webhook event types sent to `callback_url` (`run.completed`, `run.failed`, "
        "`run.cancelled`, `run.waiting`, `run.paused`); default: the three terminal ones.",
    )


class DispatchAccepted(BaseModel):
    task_id: str
    status: RunStatus
    replayed: bool = Field(
        default=False, description="True when an earlier dispatch with this Idempotency-Key made the task."
    )


class ExecutionState(StrEnum):
    """Temporal's view of a task: whether its workflow is still open and how it closed. How the run
    itself ended (completed, max_iterations, ...) is `status` in `GET /tasks/{id}`."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"


class TaskSummary(BaseModel):
    task_id: str
    execution_status: ExecutionState
    created_at: datetime
    closed_at: datetime | None = None
    goal: str | None = Field(default=None, description="The first characters of the goal.")
    toolkits: list[str] = Field(default_factory=list)
    model: str | None = None
    agent: AgentRef | None = Field(default=None, description="The agent definition (name, version) run.")


class TaskPage(BaseModel):
    tasks: list[TaskSummary]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page.")


class TaskDetail(TaskSummary):
    status: RunStatus
    live: bool = Field(
        description="Whether progress came from the run itself; false while no worker answers."
    )
    turns: int = 0
    steps: list[StepRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    output: str | None = None
    truncated: bool = False
    error: RunError | None = None
    pending_approval: PendingApproval | None = Field(
        default=None, description="Tool calls waiting for approve/deny (status `waiting`)."
    )
    pending_unknown: list[PendingUnknownOutcome] = Field(
        default_factory=list,
        description="Unsafe tool calls whose outcome is unknown after a crash, waiting for "
        "`POST /tasks/{id}/resolve` (status `waiting`).",
    )
    paused: BudgetPause | None = Field(
        default=None, description="Which USD budget the run reached, spent vs limit (status `paused`)."
    )
    budget_usd: float | None = Field(default=None, description="The run's USD budget now.")


class TaskPatch(BaseModel):
    """What may change in a running task."""

    model_config = ConfigDict(extra="forbid")

    budget_usd: StrictBudgetUsd = Field(
        description="The run's new USD budget. Above what it spent, a run paused at its budget goes "
        "on; at or below it, the run pauses before its next model call."
    )


class TaskPatched(BaseModel):
    task_id: str
    budget_usd: float
    spent_usd: float | None = Field(description="What the run had spent when the change was sent.")


class CancelAccepted(BaseModel):
    task_id: str
    status: str = "cancelling"
    hard_cancel_after_seconds: float = Field(
        description="If the run is still going this long after the cancel, it is cancelled outright "
        "(a timer in the run's history: it holds across gateway restarts)."
    )


class ApprovalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000, description="Shown to the model.")


class ApprovalAccepted(BaseModel):
    task_id: str
    approved: bool
    calls: list[str] = Field(description="Slugs of the tool calls the decision applies to.")


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: UnknownOutcomeAction = Field(
        description="retry: run the call again (you checked it did not happen); skip: do not, "
        "and tell the model its outcome is unknown; abort: end the run."
    )
    reason: str | None = Field(default=None, max_length=2000)


class ResolveAccepted(BaseModel):
    task_id: str
    action: UnknownOutcomeAction
    keys: list[str] = Field(description="Idempotency keys of the calls the decision applies to.")


class UsageReport(BaseModel):
    """The caller's own spend on model calls in one calendar month (UTC)."""

    month: str = Field(description="YYYY-MM")
    total_usd: float = Field(description="Priced calls only: `unpriced_calls` are not in it.")
    model_calls: int
    unpriced_calls: int = Field(description="Calls whose model has no price: their cost is unknown.")
    by_model: dict[str, float]
    by_schedule: dict[str, float] = Field(description="Spend of each schedule's fires, by schedule name.")


class HealthStatus(BaseModel):
    status: str


# --- schedules (the definition models themselves come from contracts)


class ScheduleDetail(BaseModel):
    name: str
    schedule_id: str
    source: str = Field(description="`api`, or the declarative source that manages it (read-only here).")
    timing: ScheduleTiming
    run: RunTemplate
    suspend: bool
    concurrency_policy: ConcurrencyPolicy
    max_run_history: int
    next_run_times: list[datetime] = Field(description="The next fires (empty while suspended).")
    last_run_at: datetime | None = None
    running_fire_ids: list[str] = Field(default_factory=list)
    fires_total: int = 0
    skipped_overlap_total: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, view: ScheduleView) -> ScheduleDetail:
        definition = view.definition
        return cls(
            name=definition.name,
            schedule_id=view.schedule_id,
            source=view.source,
            timing=definition.timing,
            run=definition.run,
            suspend=definition.suspend,
            concurrency_policy=definition.concurrency_policy,
            max_run_history=definition.max_run_history,
            next_run_times=view.next_run_times,
            last_run_at=view.last_run_at,
            running_fire_ids=view.running_fire_ids,
            fires_total=view.fires_total,
            skipped_overlap_total=view.skipped_overlap_total,
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


class SchedulePage(BaseModel):
    schedules: list[ScheduleSummary]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page.")


class TriggerAccepted(BaseModel):
    name: str
    fire_id: str | None = Field(
        default=None, description="The fire's id when known at once (concurrency policy Allow)."
    )
    detail: str


class RunHistoryPage(BaseModel):
    name: str
    runs: list[FireRecord] = Field(description="Newest first; runs still going are never trimmed.")
    max_run_history: int
    skipped_total: int = Field(default=0, description="Overlap skips recorded over the schedule's life.")
