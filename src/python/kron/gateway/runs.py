"""Runs in Temporal, as the gateway sees them: start by name, list through visibility, read state
through queries and descriptions. The workflow is only ever addressed by its string names.

Ownership is the `KronUserId` search attribute set when a run starts: listing filters on it in the
visibility query, and reading a task checks it from the description. Never the task id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from kron.common.logging import get_logger
from kron.contracts import names
from kron.contracts.models import AgentRunInput, AgentRunResult, RunError, RunProgress, RunStatus
from kron.gateway.errors import ApiError, not_found
from kron.gateway.schemas import ExecutionState, TaskDetail, TaskSummary

log = get_logger(__name__)

USER_SEARCH_ATTRIBUTE = SearchAttributeKey.for_keyword(names.SEARCH_ATTRIBUTE_USER)
GOAL_PREVIEW_CHARS = 200
# WorkflowExecutionStarted, WorkflowTaskScheduled, WorkflowTaskStarted, WorkflowTaskCompleted: below
# four events no worker has finished a workflow task yet — the run is queued, and a query would
# only wait for a worker that is not there.
_EVENTS_ONCE_A_WORKER_RAN_IT = 4

_STATE_BY_SDK_STATUS = {
    WorkflowExecutionStatus.RUNNING: ExecutionState.RUNNING,
    WorkflowExecutionStatus.CONTINUED_AS_NEW: ExecutionState.RUNNING,  # its successor runs
    WorkflowExecutionStatus.COMPLETED: ExecutionState.COMPLETED,
    WorkflowExecutionStatus.FAILED: ExecutionState.FAILED,
    WorkflowExecutionStatus.CANCELED: ExecutionState.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: ExecutionState.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT: ExecutionState.TIMED_OUT,
}
_VISIBILITY_STATUS = {
    ExecutionState.RUNNING: "Running",
    ExecutionState.COMPLETED: "Completed",
    ExecutionState.FAILED: "Failed",
    ExecutionState.CANCELLED: "Canceled",
    ExecutionState.TERMINATED: "Terminated",
    ExecutionState.TIMED_OUT: "TimedOut",
}
# Why a run that did not close normally ended, in words for the user (no internals).
_ABNORMAL_END = {
    ExecutionState.FAILED: "The run failed unexpectedly",
    ExecutionState.TERMINATED: "The run was terminated by an operator",
    ExecutionState.TIMED_OUT: "The run exceeded its time limit",
}

ResultT = TypeVar("ResultT")
RunHandle = WorkflowHandle[Any, AgentRunResult]


# --- ids and queries


def new_task_id() -> str:
    return f"run-{uuid.uuid4().hex}"


def idempotent_task_id(user_id: str, idempotency_key: str) -> str:
    """The same (user, key) always names the same workflow; different users never collide."""
    digest = hashlib.sha256(f"{len(user_id)}:{user_id}:{idempotency_key}".encode()).hexdigest()
    return f"run-{digest[:32]}"


def quote_literal(value: str) -> str:
    """A visibility-query string literal. User ids are restricted to a quote-free alphabet already
    (`tokens.USER_ID_PATTERN`); escaping anyway keeps this safe for any caller."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def visibility_query(user_id: str, state: ExecutionState | None = None) -> str:
    # Runs that continued as new are history: their successor (same task id) is the task.
    clauses = [
        f"{names.SEARCH_ATTRIBUTE_USER} = {quote_literal(user_id)}",
        f"WorkflowType = {quote_literal(names.AGENT_WORKFLOW)}",
        "ExecutionStatus != 'ContinuedAsNew'",
    ]
    if state is not None:
        clauses.append(f"ExecutionStatus = {quote_literal(_VISIBILITY_STATUS[state])}")
    return " AND ".join(clauses)


class CursorCodec:
    """Temporal's page token, signed and bound to (user, filter): a client can hand it back but not
    forge or reuse it for another listing, and garbage never reaches Temporal (which retries it)."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"kron-gateway list cursor", hashlib.sha256).digest()

    def encode(self, page_token: bytes, scope: str) -> str:
        return f"{_b64(page_token)}.{_b64(self._sign(page_token, scope))}"

    def decode(self, cursor: str, scope: str) -> bytes | None:
        token_part, _, signature_part = cursor.partition(".")
        try:
            page_token = _unb64(token_part)
            signature = _unb64(signature_part)
        except (binascii.Error, ValueError):
            return None
        if not page_token or not hmac.compare_digest(signature, self._sign(page_token, scope)):
            return None
        return page_token

    def _sign(self, page_token: bytes, scope: str) -> bytes:
        return hmac.new(self._key, scope.encode() + b"\0" + page_token, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- starting


def request_fingerprint(run_input: AgentRunInput) -> str:
    """What makes two dispatches "the same request" for idempotency."""
    fields = run_input.model_dump(mode="json", include={
        "goal", "toolkits", "model", "max_iterations", "token_budget", "callback_url", "approval",
    })
    # Fields added later count only when they differ from their default: an earlier run's
    # fingerprint stays the same, so retrying its dispatch still finds it.
    fields.update(run_input.model_dump(mode="json", exclude_defaults=True, include={
        "budget_usd", "budget_pause_timeout_seconds", "unknown_outcome_timeout_seconds",
    }))
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


async def start_run(
    client: Client,
    run_input: AgentRunInput,
    *,
    task_queue: str,
    idempotency_key: str | None,
    rpc_timeout: timedelta,
) -> tuple[str, RunStatus, bool]:
    """Start the run; returns (task id, status, replayed).

    With an idempotency key the task id derives from (user, key) and Temporal does the
    deduplication (USE_EXISTING while it runs, REJECT_DUPLICATE once it closed): no local state,
    so it holds across gateway replicas and restarts. A replay with a different request is a 422.
    """
    user_id = run_input.user_id
    fingerprint = request_fingerprint(run_input)
    attempt = uuid.uuid4().hex  # tells "we started it" from "it was there" without another store
    task_id = idempotent_task_id(user_id, idempotency_key) if idempotency_key else new_task_id()
    memo = {
        "goal": run_input.goal[:GOAL_PREVIEW_CHARS],
        "toolkits": run_input.toolkits,
        "model": run_input.model,
        "fingerprint": fingerprint,
        "attempt": attempt,
    }
    try:
        await client.start_workflow(
            names.AGENT_WORKFLOW,
            run_input,
            id=task_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=(
                WorkflowIDConflictPolicy.USE_EXISTING if idempotency_key else WorkflowIDConflictPolicy.FAIL
            ),
            search_attributes=TypedSearchAttributes([SearchAttributePair(USER_SEARCH_ATTRIBUTE, user_id)]),
            memo=memo,
            rpc_timeout=rpc_timeout,
        )
    except WorkflowAlreadyStartedError:
        if idempotency_key is None:
            raise  # a fresh uuid4 collided: not something to paper over
    if idempotency_key is None:
        return task_id, RunStatus.QUEUED, False

    handle = client.get_workflow_handle(task_id, result_type=AgentRunResult)
    description = await handle.describe(rpc_timeout=rpc_timeout)
    existing = await description.memo()
    if existing.get("attempt") == attempt:
        return task_id, RunStatus.QUEUED, False
    if existing.get("fingerprint") != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was used for a different request; use a new key",
        )
    return task_id, await coarse_status(handle, description, rpc_timeout), True


# --- reading


async def describe_owned(
    client: Client, task_id: str, user_id: str, rpc_timeout: timedelta
) -> tuple[RunHandle, WorkflowExecutionDescription]:
    """The task's handle and description, or 404 when it does not exist or is someone else's."""
    handle = client.get_workflow_handle(task_id, result_type=AgentRunResult)
    try:
        description = await handle.describe(rpc_timeout=rpc_timeout)
    except RPCError as error:
        if error.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise not_found() from None
        raise
    owner = description.typed_search_attributes.get(USER_SEARCH_ATTRIBUTE)
    if owner != user_id or description.workflow_type != names.AGENT_WORKFLOW:
        raise not_found()  # the same answer as "no such task": ids are not an oracle
    return handle, description


def execution_state(status: WorkflowExecutionStatus | None) -> ExecutionState:
    return _STATE_BY_SDK_STATUS.get(status, ExecutionState.RUNNING) if status else ExecutionState.RUNNING


def is_queued(description: WorkflowExecutionDescription) -> bool:
    return (
        execution_state(description.status) is ExecutionState.RUNNING
        and description.history_length < _EVENTS_ONCE_A_WORKER_RAN_IT
    )


async def summary(execution: WorkflowExecution) -> TaskSummary:
    memo = await execution.memo()
    return TaskSummary(
        task_id=execution.id,
        execution_status=execution_state(execution.status),
        created_at=execution.start_time,
        closed_at=execution.close_time,
        goal=_str_or_none(memo.get("goal")),
        toolkits=[t for t in memo.get("toolkits") or [] if isinstance(t, str)],
        model=_str_or_none(memo.get("model")),
    )


async def coarse_status(
    handle: RunHandle, description: WorkflowExecutionDescription, rpc_timeout: timedelta
) -> RunStatus:
    """The run's status from Temporal alone (no query, so no worker needed)."""
    state = execution_state(description.status)
    if state is ExecutionState.RUNNING:
        return RunStatus.QUEUED if is_queued(description) else RunStatus.RUNNING
    if state is ExecutionState.COMPLETED:
        result = await handle.result(rpc_timeout=rpc_timeout)
        return result.status
    return RunStatus.CANCELLED if state is ExecutionState.CANCELLED else RunStatus.FAILED


async def read_task(
    handle: RunHandle,
    description: WorkflowExecutionDescription,
    *,
    query_timeout: timedelta,
    rpc_timeout: timedelta,
) -> TaskDetail:
    """Everything known about a task. Progress comes from the `progress` query (the run's own
    account); closed runs answer it by replay on a worker. Without an answer, what Temporal knows."""
    base = (await summary(description)).model_dump()
    state = base["execution_status"]
    if is_queued(description):
        return TaskDetail(**base, status=RunStatus.QUEUED, live=False)

    progress = await query(handle, names.QUERY_PROGRESS, RunProgress, query_timeout)
    detail = TaskDetail(**base, status=progress.status if progress else RunStatus.RUNNING, live=progress is not None)
    if progress is not None:
        detail.turns, detail.steps, detail.usage = progress.turns, progress.steps, progress.usage
        detail.pending_approval = progress.pending_approval
        detail.pending_unknown = progress.pending_unknown
        detail.paused, detail.budget_usd = progress.paused, progress.budget_usd

    result: AgentRunResult | None = None
    if state is ExecutionState.COMPLETED:
        result = await handle.result(rpc_timeout=rpc_timeout)
    elif state is ExecutionState.CANCELLED or (
        state is ExecutionState.RUNNING and progress is not None and progress.status.is_terminal
    ):
        result = await query(handle, names.QUERY_RESULT, AgentRunResult, query_timeout)
    if state is ExecutionState.CANCELLED:
        detail.status = RunStatus.CANCELLED
    elif state in _ABNORMAL_END:
        detail.status = RunStatus.FAILED
        detail.error = RunError(code=state.value, message=_ABNORMAL_END[state])
    if result is not None:
        detail.status = RunStatus.CANCELLED if state is ExecutionState.CANCELLED else result.status
        detail.output, detail.truncated, detail.error = result.output, result.truncated, result.error
        detail.usage, detail.turns = result.usage, max(detail.turns, result.turns)
    return detail


async def query(
    handle: RunHandle, name: str, result_type: type[ResultT], timeout: timedelta
) -> ResultT | None:
    """A query's answer, or None when no worker answered in time (or the query failed)."""
    try:
        answer: ResultT = await handle.query(name, result_type=result_type, rpc_timeout=timeout)
    except Exception as error:  # noqa: BLE001 - deadline, no worker, query failed: no answer
        log.info("query unanswered", query=name, exc_type=type(error).__name__)
        return None
    return answer


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
