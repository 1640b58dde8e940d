"""Runs in Temporal, as the gateway sees them: start by name, list through visibility, read state
through queries and descriptions. The workflow is only ever addressed by its string names.

Ownership is the `KronUserId` search attribute set when a run starts: listing filters on it in the
visibility query, and reading a task checks it from the description. Never the task id. An admin
(`Identity.is_admin`) passes the ownership check for the actions routes allow admins (`owned` with
the caller's `Identity`), and every such access to another user's run is logged with who did it.

`RunStore` holds the client and the deadlines (Temporal calls, queries that need a worker) so the
routes pass neither; what a task's status is, from what this reads, is `task_view`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from kron.common import agent_runs
from kron.common.agent_runs import OWNER_SEARCH_ATTRIBUTE, owner_clause, quote_literal
from kron.common.logging import get_logger
from kron.contracts import names
from kron.contracts.models import AgentRef, AgentRunInput, AgentRunResult, RunProgress, RunStatus
from kron.gateway.errors import ApiError, not_found
from kron.gateway.schemas import ExecutionState, TaskDetail, TaskSummary
from kron.gateway.task_view import needs_result, task_view
from kron.gateway.tokens import Identity

log = get_logger(__name__)

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

ResultT = TypeVar("ResultT")
RunHandle = WorkflowHandle[Any, AgentRunResult]


# --- ids and queries


def new_task_id() -> str:
    return agent_runs.task_id(uuid.uuid4().hex)


def idempotent_task_id(user_id: str, idempotency_key: str) -> str:
    """The same (user, key) always names the same workflow; different users never collide."""
    digest = hashlib.sha256(f"{len(user_id)}:{user_id}:{idempotency_key}".encode()).hexdigest()
    return agent_runs.task_id(digest[:32])


def visibility_query(user_id: str, state: ExecutionState | None = None) -> str:
    # Runs that continued as new are history: their successor (same task id) is the task.
    clauses = [
        owner_clause(user_id),
        f"WorkflowType = {quote_literal(names.AGENT_WORKFLOW)}",
        "ExecutionStatus != 'ContinuedAsNew'",
    ]
    if state is not None:
        clauses.append(f"ExecutionStatus = {quote_literal(_VISIBILITY_STATUS[state])}")
    return " AND ".join(clauses)


def request_fingerprint(run_input: AgentRunInput) -> str:
    """What makes two dispatches "the same request" for idempotency."""
    fields = run_input.model_dump(mode="json", include={
        "goal", "toolkits", "model", "max_iterations", "token_budget", "callback_url", "approval",
    })
    # Fields added later count only when they differ from their default: an earlier run's
    # fingerprint stays the same, so retrying its dispatch still finds it.
    fields.update(run_input.model_dump(mode="json", exclude_defaults=True, include={
        "budget_usd", "budget_pause_timeout_seconds", "unknown_outcome_timeout_seconds", "cache_ttl",
    }))
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


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
        goal=_str_or_none(memo.get(agent_runs.MEMO_GOAL)),
        toolkits=[t for t in memo.get(agent_runs.MEMO_TOOLKITS) or [] if isinstance(t, str)],
        model=_str_or_none(memo.get(agent_runs.MEMO_MODEL)),
        agent=_agent_or_none(memo.get(agent_runs.MEMO_AGENT)),
    )


class RunStore:
    """Agent runs in Temporal, for one gateway: the client, the agent task queue and the deadlines."""

    def __init__(self, client: Client, *, task_queue: str, rpc_timeout: timedelta, query_timeout: timedelta) -> None:
        self.client = client
        self.task_queue = task_queue
        self.rpc_timeout = rpc_timeout
        self.query_timeout = query_timeout

    # --- starting

    async def start(
        self, run_input: AgentRunInput, *, idempotency_key: str | None, fairness_weight: float | None = None
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
        try:
            await self.client.start_workflow(
                names.AGENT_WORKFLOW,
                run_input,
                id=task_id,
                task_queue=self.task_queue,
                task_timeout=agent_runs.RUN_TASK_TIMEOUT,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=(
                    WorkflowIDConflictPolicy.USE_EXISTING if idempotency_key else WorkflowIDConflictPolicy.FAIL
                ),
                search_attributes=agent_runs.owner_search_attributes(user_id),
                memo=agent_runs.run_memo(run_input, fingerprint=fingerprint, attempt=attempt),
                priority=agent_runs.run_priority(user_id, fairness_weight),
                rpc_timeout=self.rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            if idempotency_key is None:
                raise  # a fresh uuid4 collided: not something to paper over
        if idempotency_key is None:
            return task_id, RunStatus.QUEUED, False

        handle = self.client.get_workflow_handle(task_id, result_type=AgentRunResult)
        description = await self.describe(handle)
        existing = await description.memo()
        if existing.get("attempt") == attempt:
            return task_id, RunStatus.QUEUED, False
        if existing.get("fingerprint") != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request; use a new key",
            )
        return task_id, await self.coarse_status(handle, description), True

    # --- reading

    async def list_page(
        self, user_id: str, state: ExecutionState | None, *, page_size: int, page_token: bytes | None
    ) -> tuple[list[TaskSummary], bytes | None]:
        pages = self.client.list_workflows(
            visibility_query(user_id, state),
            page_size=page_size,
            next_page_token=page_token,
            rpc_timeout=self.rpc_timeout,
        )
        await pages.fetch_next_page()
        return [await summary(execution) for execution in pages.current_page or []], pages.next_page_token

    async def owned(
        self, task_id: str, caller: str | Identity, *, action: str = "read"
    ) -> tuple[RunHandle, WorkflowExecutionDescription]:
        """The task's handle and description, or 404 when it does not exist or is someone else's.

        `caller`: the user id (owners only), or the caller's `Identity` where an admin may `action`
        any user's run (the route's verb, for the log line every such admin access writes)."""
        user_id = caller if isinstance(caller, str) else caller.user_id
        handle = self.client.get_workflow_handle(task_id, result_type=AgentRunResult)
        try:
            description = await self.describe(handle)
        except RPCError as error:
            if error.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise not_found() from None
            raise
        owner = description.typed_search_attributes.get(OWNER_SEARCH_ATTRIBUTE)
        if description.workflow_type != names.AGENT_WORKFLOW:
            raise not_found()
        if owner != user_id:
            if isinstance(caller, str) or not caller.is_admin:
                raise not_found()  # the same answer as "no such task": ids are not an oracle
            log.info("admin action", admin=user_id, action=action, task_id=task_id, owner=owner)
        return handle, description

    async def describe(self, handle: RunHandle) -> WorkflowExecutionDescription:
        return await handle.describe(rpc_timeout=self.rpc_timeout)

    async def coarse_status(self, handle: RunHandle, description: WorkflowExecutionDescription) -> RunStatus:
        """The run's status from Temporal alone (no query, so no worker needed)."""
        state = execution_state(description.status)
        result = await handle.result(rpc_timeout=self.rpc_timeout) if state is ExecutionState.COMPLETED else None
        view = task_view(await summary(description), queued=is_queued(description), progress=None, result=result)
        return view.status

    async def read(self, handle: RunHandle, description: WorkflowExecutionDescription) -> TaskDetail:
        """Everything known about a task. Progress comes from the `progress` query (the run's own
        account); closed runs answer it by replay on a worker. Without an answer, what Temporal knows."""
        base = await summary(description)
        if is_queued(description):
            return task_view(base, queued=True, progress=None, result=None)
        progress = await self.query(handle, names.QUERY_PROGRESS, RunProgress)
        result: AgentRunResult | None = None
        if needs_result(base.execution_status, progress):
            if base.execution_status is ExecutionState.COMPLETED:
                result = await handle.result(rpc_timeout=self.rpc_timeout)
            else:
                result = await self.query(handle, names.QUERY_RESULT, AgentRunResult)
        return task_view(base, queued=False, progress=progress, result=result)

    async def query(self, handle: RunHandle, name: str, result_type: type[ResultT]) -> ResultT | None:
        """A query's answer, or None when no worker answered in time (or the query failed)."""
        try:
            answer: ResultT = await handle.query(name, result_type=result_type, rpc_timeout=self.query_timeout)
        except Exception as error:  # noqa: BLE001 - deadline, no worker, query failed: no answer
            log.info("query unanswered", query=name, exc_type=type(error).__name__)
            return None
        return answer

    async def signal(self, handle: RunHandle, name: str, payload: Any) -> None:
        await handle.signal(name, payload, rpc_timeout=self.rpc_timeout)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _agent_or_none(value: Any) -> AgentRef | None:
    try:
        return AgentRef.model_validate(value) if isinstance(value, dict) else None
    except ValidationError:
        return None
