"""`AgentWorkflow`: the agent loop made durable one step at a time.

Every model call and every tool call is its own activity, so a worker that dies mid-run costs at
most the step that was in flight: completed steps are in the workflow history and are never issued
again. The workflow itself stays pure (no I/O, clock or randomness); `AgentLoop` decides each step.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from kron.agent_core.loop import (
        DEFAULT_SYSTEM_PROMPT,
        AgentLoop,
        CallModel,
        Finish,
        RunLimits,
        RunTools,
    )
    from kron.agent_core.types import ModelResponse, ToolCall, ToolResult
    from kron.contracts import names
    from kron.contracts.models import (
        AgentRunInput,
        AgentRunResult,
        ApprovalDecision,
        ApprovalPolicy,
        PendingApproval,
        PendingToolCall,
        RunError,
        RunProgress,
        RunStatus,
        Usage,
    )
    from kron.worker.activities import (
        TOOL_TRANSPORT_ERROR,
        AgentActivities,
        ListToolsInput,
        ModelCallInput,
        NotifyInput,
        ToolCallInput,
    )

# A dead worker is noticed within HEARTBEAT_TIMEOUT; activities heartbeat every second.
HEARTBEAT_TIMEOUT = timedelta(seconds=5)
MODEL_CALL_TIMEOUT = timedelta(minutes=10)
TOOL_CALL_TIMEOUT = timedelta(minutes=5)
DEFAULT_MAX_TOKENS = 4096

# Rate limits, overload, 5xx and connection errors are retried with backoff (a `retry-after` from the
# API overrides the backoff for that attempt); bad requests, auth errors and a blocked key are raised
# as non-retryable by the activity and fail the run at once with a clear error.
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=10,
)
# Tool transport failures (Composio 5xx, connection): a few tries, then the model is told.
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
)
NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)

# Continue-as-new every this many model turns (or sooner when Temporal suggests it), so histories
# stay small and replays after a crash stay fast however long a run goes.
TURNS_PER_HISTORY = 50


@workflow.defn(name=names.AGENT_WORKFLOW)
class AgentWorkflow:
    def __init__(self) -> None:
        self._loop: AgentLoop | None = None
        self._status = RunStatus.QUEUED
        self._result: AgentRunResult | None = None
        self._cancel_requested = False
        self._pending_approval: PendingApproval | None = None
        self._decision: ApprovalDecision | None = None

    @workflow.run
    async def run(self, input: AgentRunInput) -> AgentRunResult:
        limits = RunLimits(
            model=input.model or "",  # "": the worker's default model, filled in by call_model
            max_tokens=input.max_tokens or DEFAULT_MAX_TOKENS,
            max_iterations=input.max_iterations,
            token_budget=input.token_budget,
            system_prompt=input.system_prompt or DEFAULT_SYSTEM_PROMPT,
        )
        loop = self._loop = AgentLoop(limits, input.goal, input.checkpoint)
        if self._cancel_requested:
            loop.request_cancel()
        self._status = RunStatus.RUNNING
        turns_at_start = loop.state.turns
        try:
            if input.toolkits and not loop.state.tools_loaded:
                loop.set_tools(await self._list_tools(input))
            while True:
                step = loop.next_step()
                if isinstance(step, Finish):
                    result = step.result
                    break
                if isinstance(step, CallModel):
                    response = await self._call_model(ModelCallInput(request=step.request))
                    if isinstance(response, RunError):
                        result = loop.fail(response)
                        break
                    loop.record_model_response(response)
                elif isinstance(step, RunTools):
                    refusals = await self._approve(input.approval, loop.state.turns, step.calls)
                    if refusals is None:
                        continue  # cancelled while waiting: the loop finishes the run
                    results = await asyncio.gather(
                        *(
                            self._refused(c, refusals[c.id])
                            if c.id in refusals
                            else self._execute_tool(input.user_id, loop.state.turns, c)
                            for c in step.calls
                        )
                    )
                    loop.record_tool_results(list(results))
                if loop.finished is None and (
                    loop.state.turns - turns_at_start >= TURNS_PER_HISTORY
                    or workflow.info().is_continue_as_new_suggested()
                ):
                    # Only between steps: a checkpoint never holds a step that was half done.
                    workflow.continue_as_new(input.model_copy(update={"checkpoint": loop.state}))
        except (asyncio.CancelledError, CancelledError):
            # Hard cancel: the in-flight activity was cancelled through its heartbeat.
            result = loop.partial_result(RunStatus.CANCELLED)
            await self._finish(input, result)
            raise
        await self._finish(input, result)
        return result

    # ---- signals and queries -------------------------------------------------------------------
    @workflow.signal(name=names.SIGNAL_CANCEL)
    def cancel(self) -> None:
        """Graceful cancel: finish the current step, then stop with a partial result."""
        self._cancel_requested = True
        if self._loop is not None:
            self._loop.request_cancel()

    @workflow.signal(name=names.SIGNAL_APPROVE)
    def approve(self, decision: ApprovalDecision) -> None:
        """A human's decision on the tool calls waiting for approval (ignored if none wait)."""
        if self._pending_approval is not None:
            self._decision = decision

    @workflow.query(name=names.QUERY_STATUS)
    def status(self) -> RunStatus:
        return self._status

    @workflow.query(name=names.QUERY_PROGRESS)
    def progress(self) -> RunProgress:
        if self._loop is None:
            return RunProgress(status=self._status, turns=0, steps=[], usage=Usage())
        progress = self._loop.progress(self._status)
        progress.pending_approval = self._pending_approval
        return progress

    @workflow.query(name=names.QUERY_USAGE)
    def usage(self) -> Usage:
        return self._loop.state.usage if self._loop else Usage()

    @workflow.query(name=names.QUERY_RESULT)
    def result(self) -> AgentRunResult:
        if self._result is not None:
            return self._result
        if self._loop is None:
            return AgentRunResult(status=self._status)
        return self._loop.partial_result(self._status)

    # ---- steps ---------------------------------------------------------------------------------
    async def _list_tools(self, input: AgentRunInput) -> list[dict[str, object]]:
        return await workflow.execute_activity_method(
            AgentActivities.list_tools,
            ListToolsInput(user_id=input.user_id, toolkits=input.toolkits),
            start_to_close_timeout=timedelta(minutes=1),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=TOOL_RETRY,
        )

    async def _call_model(self, input: ModelCallInput) -> ModelResponse | RunError:
        try:
            return await workflow.execute_activity_method(
                AgentActivities.call_model,
                input,
                start_to_close_timeout=MODEL_CALL_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=MODEL_RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, CancelledError):
                raise asyncio.CancelledError() from exc  # a hard cancel of the run, not a failure
            if isinstance(cause, ApplicationError):
                details = cause.details[0] if cause.details else {}
                status_code = details.get("status_code") if isinstance(details, dict) else None
                return RunError(
                    code=cause.type or "model_error", message=cause.message, status_code=status_code
                )
            return RunError(code="model_error", message=str(cause or exc))

    async def _execute_tool(self, user_id: str, turn: int, call: ToolCall) -> ToolResult:
        info = workflow.info()
        try:
            return await workflow.execute_activity_method(
                AgentActivities.execute_tool,
                ToolCallInput(
                    user_id=user_id,
                    call=call,
                    idempotency_key=f"{info.workflow_id}/{turn}/{call.id}",
                ),
                start_to_close_timeout=TOOL_CALL_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=TOOL_RETRY,
            )
        except ActivityError as exc:
            # This call failed for good: the model hears about it; the other calls stand.
            cause = exc.cause
            if isinstance(cause, CancelledError):
                raise asyncio.CancelledError() from exc
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            kind = "unreachable" if getattr(cause, "type", None) == TOOL_TRANSPORT_ERROR else "failed"
            return ToolResult(tool_use_id=call.id, content=f"tool {kind}: {reason}", is_error=True)

    async def _approve(
        self, policy: ApprovalPolicy | None, turn: int, calls: list[ToolCall]
    ) -> dict[str, str] | None:
        """Wait for a human on the calls the policy gates. Returns the refused calls' reasons by id
        (empty: run them all), or None if the run was cancelled while waiting."""
        gated = [c for c in calls if policy is not None and policy.requires(c.name)]
        if policy is None or not gated:
            return {}
        self._pending_approval = PendingApproval(
            turn=turn,
            calls=[PendingToolCall(id=c.id, name=c.name, input=c.input) for c in gated],
            timeout_seconds=policy.timeout_seconds,
        )
        self._decision = None
        self._status = RunStatus.WAITING
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None or self._cancel_requested,
                timeout=timedelta(seconds=policy.timeout_seconds),
            )
            decision = self._decision
        except TimeoutError:
            decision = ApprovalDecision(
                approved=False, reason=f"no decision within {policy.timeout_seconds} s"
            )
        finally:
            self._pending_approval = None
            self._status = RunStatus.RUNNING
        if decision is None:
            return None
        if decision.approved:
            return {}
        reason = f"the user did not approve this call: {decision.reason or 'denied'}"
        return {c.id: reason for c in gated}

    @staticmethod
    async def _refused(call: ToolCall, reason: str) -> ToolResult:
        return ToolResult(tool_use_id=call.id, content=reason, is_error=True)

    async def _finish(self, input: AgentRunInput, result: AgentRunResult) -> None:
        self._status = result.status
        self._result = result
        try:
            await workflow.execute_activity_method(
                AgentActivities.notify_run_finished,
                NotifyInput(
                    workflow_id=workflow.info().workflow_id,
                    callback_url=input.callback_url,
                    result=result,
                ),
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError:
            workflow.logger.warning("completion webhook failed; the run's result is unaffected")
