"""Tasks: dispatch, list, read, follow (SSE) and cancel agent runs. Each route acts for the verified
`sub` only; another user's task is a 404, like a task that does not exist."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse
from temporalio.client import WorkflowExecutionDescription
from temporalio.service import RPCError

from kron.common.agent_runs import agent_run_input
from kron.common.callback_urls import normalized_url
from kron.common.logging import get_logger
from kron.common.mcp_preflight import MCP_SERVER_UNAVAILABLE
from kron.contracts import names
from kron.contracts.agents import AgentOverrides
from kron.contracts.models import (
    AgentRef,
    AgentRunInput,
    ApprovalDecision,
    ApprovalPolicy,
    BudgetUpdate,
    CancelRequest,
    RunProgress,
    UnknownOutcomeDecision,
)
from kron.gateway.agents import run_fields
from kron.gateway.deps import Caller, CurrentUser, RequestId, Runs, State, Transcripts
from kron.gateway.errors import ApiError, ToolkitNotConnectedBody, error_responses, validation_error
from kron.gateway.metrics import DispatchOutcome
from kron.gateway.preflight import require_mcp_available
from kron.gateway.run_limits import mcp_server_errors, run_limit_errors
from kron.gateway.runs import RunHandle, RunStore, execution_state
from kron.gateway.schemas import (
    ApprovalAccepted,
    ApprovalRequest,
    CancelAccepted,
    DispatchAccepted,
    DispatchRequest,
    ExecutionState,
    ResolveAccepted,
    ResolveRequest,
    TaskDetail,
    TaskPage,
    TaskPatch,
    TaskPatched,
)
from kron.gateway.settings import GatewaySettings
from kron.gateway.state import GatewayState

log = get_logger(__name__)
router = APIRouter(prefix="/tasks", tags=["tasks"])

TASK_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
TaskIdPath = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="The id `dispatch` returned.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="Retrying a dispatch with the same key returns the task the first one made.",
    ),
]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)]
_ASCII_INDEX = re.compile(r"^[0-9]{1,9}$")
_SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `step` (one per completed step, `id` = step index), "
        "`status` (on every change) and a final `end` with the task, after which the stream closes "
        "(or `error` if Temporal fails mid-stream).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


# --- dispatch

_PREFLIGHT_OUTCOMES = {
    "preflight_unavailable": DispatchOutcome.PREFLIGHT_ERROR,
    "toolkit_unavailable": DispatchOutcome.INVALID,
    "toolkit_not_connected": DispatchOutcome.NOT_CONNECTED,
    MCP_SERVER_UNAVAILABLE: DispatchOutcome.PREFLIGHT_ERROR,
}


@router.post(
    "/dispatch",
    status_code=202,
    operation_id="dispatch_task",
    response_model=DispatchAccepted,
    responses={
        **error_responses(400, 401, 404, 413, 422, 429, 503),  # 404: no such agent (or version)
        409: {"model": ToolkitNotConnectedBody, "description": "A named toolkit is not connected"},
    },
    summary="Start an agent run",
)
async def dispatch(
    body: DispatchRequest,
    caller: Caller,
    state: State,
    runs: Runs,
    request_id: RequestId,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> DispatchAccepted:
    settings, metrics = state.settings, state.metrics
    user, limits = caller.user_id, state.limits(caller)
    try:
        agent = await _agent_fields(body, user, state)
        run_input = _run_input(body, user, settings, request_id, agent)
    except ApiError:
        metrics.dispatched(DispatchOutcome.INVALID)
        raise

    wait_seconds = state.dispatch_limiter.acquire(
        user, rate_per_second=limits.dispatch_rate_per_second, burst=limits.dispatch_burst
    )
    if wait_seconds > 0:
        metrics.dispatched(DispatchOutcome.RATE_LIMITED)
        retry_after = max(1, math.ceil(wait_seconds))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many dispatches; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            retry_after_seconds=retry_after,
        )

    try:
        await state.preflight.require_connected(user, run_input.toolkits, then=", then dispatch again")
        await require_mcp_available(state.mcp, run_input.mcp_servers, then="; dispatch again when it answers",
                                    timeout_seconds=settings.mcp_preflight_timeout_seconds)
    except ApiError as refused:
        metrics.dispatched(_PREFLIGHT_OUTCOMES[refused.error])
        raise

    try:
        task_id, status, replayed = await runs.start(
            run_input, idempotency_key=idempotency_key, fairness_weight=limits.fairness_weight
        )
    except RPCError:
        metrics.dispatched(DispatchOutcome.TEMPORAL_ERROR)
        raise
    metrics.dispatched(DispatchOutcome.REPLAYED if replayed else DispatchOutcome.STARTED)
    response.headers["Location"] = f"/tasks/{task_id}"
    log.info("task dispatched", task_id=task_id, user_id=user, replayed=replayed,
             toolkits=run_input.toolkits)
    return DispatchAccepted(task_id=task_id, status=status, replayed=replayed)


async def _agent_fields(body: DispatchRequest, user: str, state: GatewayState) -> dict[str, Any] | None:
    """A dispatch of an agent definition: its fields with the dispatch's overrides (404/422)."""
    if body.agent is None:
        if body.version is not None:
            raise validation_error([{"loc": ["body", "version"], "msg": "version needs agent", "type": "missing"}])
        return None
    if body.mcp_servers:  # an agent's tool sources are part of its definition (and its version)
        raise validation_error([{"loc": ["body", "mcp_servers"], "msg": "an agent's MCP servers come from its "
                                 "definition: change the agent to change them", "type": "agent_field"}])
    if state.agents is None:
        raise ApiError(503, "temporal_unavailable", "The task service is not connected yet")
    named = ([body.toolkit] if body.toolkit else []) + body.toolkits
    overrides = AgentOverrides(
        toolkits=[t.lower() for t in named] or None, model=body.model, max_iterations=body.max_iterations,
        token_budget=body.budget, budget_usd=body.budget_usd, approval_required=body.approval_required,
        approval_timeout_seconds=(
            body.approval_timeout_seconds if "approval_timeout_seconds" in body.model_fields_set else None
        ),
    )
    return await run_fields(state.agents, user, AgentRef(name=body.agent, version=body.version), overrides,
                            loc=("body",), fields={"token_budget": "budget"})


def _run_input(
    body: DispatchRequest,
    user: str,
    settings: GatewaySettings,
    request_id: str | None,
    agent: dict[str, Any] | None = None,
) -> AgentRunInput:
    """The workflow input, after the checks that depend on settings (422 like schema errors).
    `agent`: the fields of the agent definition the dispatch runs, which replace the body's."""
    named = ([body.toolkit] if body.toolkit else []) + body.toolkits
    toolkits = list(dict.fromkeys(t.lower() for t in named))  # deduplicated, order kept
    run: dict[str, Any] = {
        "toolkits": toolkits,
        "model": body.model,
        "max_iterations": body.max_iterations,
        "token_budget": body.budget,
        "approval": (
            ApprovalPolicy(require_for=body.approval_required, timeout_seconds=body.approval_timeout_seconds)
            if body.approval_required
            else None
        ),
        "budget_usd": body.budget_usd,
        "mcp_servers": list(body.mcp_servers),
        **(agent or {}),
    }
    errors = run_limit_errors(
        settings, goal=body.goal, toolkits=run["toolkits"], model=run["model"],
        max_iterations=run["max_iterations"], token_budget=run["token_budget"], callback_url=body.callback_url,
        loc=("body",), budget_field="budget",
    )
    errors += mcp_server_errors(settings, body.mcp_servers, loc=("body",))
    if errors:
        raise validation_error(errors)
    return agent_run_input(
        user_id=user,
        goal=body.goal,
        callback_url=normalized_url(body.callback_url) if body.callback_url else None,
        **run,
        budget_pause_timeout_seconds=body.budget_pause_timeout_seconds,
        unknown_outcome_timeout_seconds=body.unknown_outcome_timeout_seconds,
        request_id=request_id,
        cache_ttl=body.cache_ttl,
        webhook_events=body.webhook_events,
    )


# --- list and read


@router.get(
    "",
    operation_id="list_tasks",
    response_model=TaskPage,
    responses=error_responses(401, 422, 503),
    summary="List your tasks: open ones first, then finished ones, most recent first",
)
async def list_tasks(
    user: CurrentUser,
    state: State,
    runs: Runs,
    status: Annotated[ExecutionState | None, Query(description="Only tasks in this state.")] = None,
    limit: Annotated[int | None, Query(ge=1, le=100)] = None,
    cursor: Annotated[str | None, Query(max_length=2048, description="`next_cursor` of the previous page.")] = None,
) -> TaskPage:
    """Open tasks first (most recently started first), then finished ones (most recently finished
    first): Temporal's visibility order, as the dev server's SQL store cannot sort otherwise."""
    settings = state.settings
    scope = f"{user}\0{status.value if status else ''}"
    page_token: bytes | None = None
    if cursor:
        page_token = state.cursors.decode(cursor, scope)
        if page_token is None:
            raise ApiError(422, "invalid_cursor", "The cursor is not valid for this listing; start over")
    tasks, next_token = await runs.list_page(
        user, status, page_size=limit or settings.list_default_page_size, page_token=page_token
    )
    return TaskPage(tasks=tasks, next_cursor=state.cursors.encode(next_token, scope) if next_token else None)


@router.get(
    "/{task_id}",
    operation_id="get_task",
    response_model=TaskDetail,
    responses=error_responses(401, 404, 422, 503),
    summary="A task's status, steps, usage and result",
)
async def get_task(task_id: TaskIdPath, caller: Caller, runs: Runs) -> TaskDetail:
    handle, description = await runs.owned(task_id, caller)  # an admin may read any run
    return await runs.read(handle, description)


# --- events


@router.get(
    "/{task_id}/events",
    operation_id="stream_task_events",
    response_class=StreamingResponse,
    responses={**_SSE_RESPONSE, **error_responses(401, 404, 422, 429, 503)},
    summary="Follow a task as Server-Sent Events",
)
async def stream_task_events(
    task_id: TaskIdPath,
    caller: Caller,
    state: State,
    runs: Runs,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Every completed step once (`Last-Event-ID` resumes after that step), status changes, then
    `end` when the run reaches a terminal state. At most `max_streams` open per user (429)."""
    # Ownership is checked before the stream starts, so a wrong id is a plain JSON 404.
    handle, description = await runs.owned(task_id, caller, action="follow")
    resume_after = int(last_event_id) if last_event_id and _ASCII_INDEX.fullmatch(last_event_id) else -1
    if not state.streams.try_acquire(caller.user_id, state.limits(caller).max_streams):
        raise ApiError(429, "too_many_streams", "Too many open event streams; close one first",
                       headers={"Retry-After": "5"})
    events = _task_events(runs, handle, description, state.settings, resume_after)
    return StreamingResponse(
        _released(_until_temporal_fails(events), lambda: state.streams.release(caller.user_id)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _task_events(
    runs: RunStore,
    handle: RunHandle,
    description: WorkflowExecutionDescription,
    settings: GatewaySettings,
    resume_after: int,
) -> AsyncIterator[str]:
    next_step = resume_after + 1
    last_status = None
    opened = last_sent = time.monotonic()
    # The progress query cannot tell a run that was terminated from one that is still going:
    # re-describe every ~2 s (and on every tick while nothing answers the query).
    describe_every = max(1, round(2.0 / settings.sse_poll_seconds))
    tick, stale = 0, False
    yield "retry: 2000\n\n"
    while True:
        if tick and (stale or tick % describe_every == 0):
            description = await runs.describe(handle)
        detail = await runs.read(handle, description)
        stale = not detail.live  # queued, or no worker answered: only Temporal can say what changed
        events: list[str] = []
        for step in detail.steps:
            if step.index >= next_step:
                events.append(_sse("step", step.model_dump_json(), event_id=str(step.index)))
                next_step = step.index + 1
        if detail.status != last_status:
            status = {"status": detail.status, "turns": detail.turns, "usage": detail.usage.model_dump()}
            if detail.paused is not None:  # status paused: which budget, spent vs limit
                status["paused"] = detail.paused.model_dump(mode="json")
            events.append(_sse("status", json.dumps(status)))
            last_status = detail.status
        closed = execution_state(description.status) is not ExecutionState.RUNNING
        if detail.status.is_terminal or closed:
            events.append(_sse("end", detail.model_dump_json(exclude={"steps"})))
            yield "".join(events)
            return
        now = time.monotonic()
        if events:
            yield "".join(events)
            last_sent = now
        elif now - last_sent >= settings.sse_keepalive_seconds:
            yield ": keepalive\n\n"  # keeps proxies from closing an idle stream
            last_sent = now
        if now - opened >= settings.sse_max_seconds:
            return  # the client reconnects with Last-Event-ID
        await asyncio.sleep(settings.sse_poll_seconds)
        tick += 1


async def _until_temporal_fails(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Once streaming, a status code can no longer say that Temporal failed: an `error` event does,
    then the stream closes (the client reconnects with Last-Event-ID)."""
    try:
        async for event in events:
            yield event
    except RPCError as error:
        log.warning("event stream stopped: temporal call failed", rpc_status=error.status.name if error.status else None)
        detail = {"error": "temporal_unavailable", "detail": "The task service is unavailable; reconnect shortly"}
        yield _sse("error", json.dumps(detail))


def _released(events: AsyncIterator[str], release: Callable[[], None]) -> AsyncIterator[str]:
    """The stream's slot is given back however it ends (finished, client gone, error), and also if
    it never started (a client gone before the first event: the generator is only collected)."""
    done = False

    def release_once() -> None:
        nonlocal done
        if not done:
            done = True
            release()

    async def relay() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        finally:
            release_once()

    relayed = relay()
    weakref.finalize(relayed, release_once)
    return relayed


def _sse(event: str, data: str, *, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


# --- cancel


@router.delete(
    "/{task_id}",
    status_code=202,
    operation_id="cancel_task",
    response_model=CancelAccepted,
    responses=error_responses(401, 404, 409, 422, 503),
    summary="Cancel a task: gracefully, then for good after a grace period",
)
async def cancel_task(
    task_id: TaskIdPath, caller: Caller, state: State, runs: Runs, transcripts: Transcripts
) -> CancelAccepted:
    """The run gets a `cancel` signal (it stops after the step in flight, keeping a partial result);
    if it is still open after `KRON_CANCEL_GRACE_SECONDS` it cancels itself outright (a timer in the
    run's own history: a gateway restart in between changes nothing). On a finished task it deletes
    the task's transcript (its conversation content) and answers 409 `task_finished`. An admin may
    cancel any user's task."""
    handle, description = await runs.owned(task_id, caller, action="cancel")
    execution = execution_state(description.status)
    if execution is not ExecutionState.RUNNING:
        # A finished task's conversation goes now rather than at the retention sweep.
        await transcripts.delete_run(task_id)
        raise ApiError(409, "task_finished", "The task has already finished; its transcript is deleted",
                       execution_status=execution.value)
    grace = state.settings.cancel_grace_seconds
    await runs.signal(handle, names.SIGNAL_CANCEL, CancelRequest(hard_cancel_after_seconds=grace))
    log.info("task cancel requested", task_id=task_id, user_id=caller.user_id, grace_seconds=grace)
    return CancelAccepted(task_id=task_id, hard_cancel_after_seconds=grace)


# --- change a running task


@router.patch(
    "/{task_id}",
    status_code=202,
    operation_id="patch_task",
    response_model=TaskPatched,
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
    summary="Change a running task's USD budget (a higher one resumes a run paused at it)",
)
async def patch_task(task_id: TaskIdPath, user: CurrentUser, runs: Runs, body: TaskPatch) -> TaskPatched:
    """Sent to the run as a `set_budget` signal. Lowering the budget to or below what the run has
    spent is allowed: the run pauses before its next model call (it does not fail), as if it had
    reached the budget. A finished task is a 409."""
    handle, progress = await _live_progress(task_id, user, runs)
    if progress.status.is_terminal:
        raise ApiError(409, "task_finished", "The task has already finished")
    await runs.signal(handle, names.SIGNAL_SET_BUDGET, BudgetUpdate(budget_usd=body.budget_usd))
    log.info("task budget changed", task_id=task_id, user_id=user, budget_usd=body.budget_usd)
    return TaskPatched(task_id=task_id, budget_usd=body.budget_usd, spent_usd=progress.usage.cost_usd)


# --- human decisions (approval, unknown tool outcomes)


async def _live_progress(task_id: str, user: str, runs: RunStore) -> tuple[RunHandle, RunProgress]:
    """The caller's running task and its progress as the run itself reports it (404/409/503)."""
    handle, description = await runs.owned(task_id, user)
    if execution_state(description.status) is not ExecutionState.RUNNING:
        raise ApiError(409, "task_finished", "The task has already finished")
    progress = await runs.query(handle, names.QUERY_PROGRESS, RunProgress)
    if progress is None:
        raise ApiError(503, "run_unavailable", "No worker answered for this task; try again")
    return handle, progress


async def _decide(
    task_id: str, user: str, runs: RunStore, approved: bool, body: ApprovalRequest | None
) -> ApprovalAccepted:
    handle, progress = await _live_progress(task_id, user, runs)
    if progress.pending_approval is None:
        raise ApiError(409, "nothing_to_approve", "The task is not waiting for an approval")
    decision = ApprovalDecision(
        approved=approved,
        reason=body.reason if body else None,
        turn=progress.pending_approval.turn,  # decides exactly what the user saw waiting
    )
    await runs.signal(handle, names.SIGNAL_APPROVE, decision)
    calls = [c.name for c in progress.pending_approval.calls]
    log.info("task approval decided", task_id=task_id, user_id=user, approved=approved, calls=calls)
    return ApprovalAccepted(task_id=task_id, approved=approved, calls=calls)


@router.post(
    "/{task_id}/approve",
    status_code=202,
    operation_id="approve_task",
    response_model=ApprovalAccepted,
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
    summary="Let the tool calls this task is waiting on run",
)
async def approve_task(
    task_id: TaskIdPath, user: CurrentUser, runs: Runs, body: ApprovalRequest | None = None
) -> ApprovalAccepted:
    return await _decide(task_id, user, runs, True, body)


@router.post(
    "/{task_id}/deny",
    status_code=202,
    operation_id="deny_task",
    response_model=ApprovalAccepted,
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
    summary="Refuse the tool calls this task is waiting on (the model is told why)",
)
async def deny_task(
    task_id: TaskIdPath, user: CurrentUser, runs: Runs, body: ApprovalRequest | None = None
) -> ApprovalAccepted:
    return await _decide(task_id, user, runs, False, body)


@router.post(
    "/{task_id}/resolve",
    status_code=202,
    operation_id="resolve_unknown_outcome",
    response_model=ResolveAccepted,
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
    summary="Decide what happens to tool calls whose outcome is unknown after a crash",
)
async def resolve_unknown_outcome(
    task_id: TaskIdPath, user: CurrentUser, runs: Runs, body: ResolveRequest
) -> ResolveAccepted:
    """An unsafe tool call (one that may act twice) that was in flight when its worker died is never
    re-run blindly: the run waits for this decision, for every such call waiting now."""
    handle, progress = await _live_progress(task_id, user, runs)
    keys = [p.idempotency_key for p in progress.pending_unknown]
    if not keys:
        raise ApiError(409, "nothing_to_resolve", "No tool call of this task has an unknown outcome")
    decision = UnknownOutcomeDecision(action=body.action, reason=body.reason, keys=keys)
    await runs.signal(handle, names.SIGNAL_RESOLVE_UNKNOWN, decision)
    log.info("unknown tool outcome resolved", task_id=task_id, user_id=user, action=body.action.value,
             calls=len(keys))
    return ResolveAccepted(task_id=task_id, action=body.action, keys=keys)

