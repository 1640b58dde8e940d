"""Request and response bodies of the HTTP API (the run models themselves come from contracts)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints

from kron.contracts.models import (
    DEFAULT_BUDGET_PAUSE_SECONDS,
    BudgetPause,
    BudgetUsd,
    PendingApproval,
    PendingUnknownOutcome,
    RunError,
    RunStatus,
    StepRecord,
    UnknownOutcomeAction,
    Usage,
)
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
    toolkit: ToolkitSlug | None = Field(default=None, description="Shorthand for one toolkit.")
    toolkits: list[ToolkitSlug] = Field(default_factory=list, max_length=32)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    max_iterations: int | None = Field(default=None, ge=1, le=1000)
    budget: int | None = Field(default=None, ge=1, le=10**12, description="Token budget for the run.")
    callback_url: HttpUrl | None = Field(default=None, description="Receives a webhook when the run ends.")
    approval_required: list[ToolkitSlug] = Field(
        default_factory=list,
        max_length=64,
        description="Toolkits (`github`) or tool slugs (`GMAIL_SEND_EMAIL`) whose calls wait for "
        "`POST /tasks/{id}/approve` or `/deny` before they run.",
    )
    approval_timeout_seconds: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="Undecided calls are denied after this."
    )
    budget_usd: BudgetUsd | None = Field(
        default=None,
        description="USD the run may spend on model calls. Reached, the run pauses (status `paused`) "
        "before its next model call until `PATCH /tasks/{id}` raises it.",
    )
    budget_pause_timeout_seconds: int = Field(
        default=DEFAULT_BUDGET_PAUSE_SECONDS, ge=1, le=30 * 24 * 3600,
        description="A run paused at a budget ends as `budget_exceeded` when no higher one comes within this.",
    )
    unknown_outcome_timeout_seconds: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600,
        description="An unsafe tool call whose outcome is unknown waits this long for "
        "`POST /tasks/{id}/resolve`, then is skipped.",
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

    budget_usd: BudgetUsd = Field(
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
