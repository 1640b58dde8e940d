"""`AgentWorkflow`: the agent loop made durable one step at a time.

Every model call and every tool call is its own activity, so a worker that dies mid-run costs at
most the step that was in flight: completed steps are in the workflow history and are never issued
again. The workflow itself stays pure (no I/O, clock or randomness); `AgentLoop` decides each step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
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
    from kron.agent_core.types import ModelResponse, ToolCall, ToolResult, TranscriptRequest
    from kron.contracts import names
    from kron.contracts.models import (
        AgentRunInput,
        AgentRunResult,
        ApprovalDecision,
        ApprovalPolicy,
        CancelRequest,
        PendingApproval,
        PendingToolCall,
        PendingUnknownOutcome,
        RunError,
        RunProgress,
        RunStatus,
        ToolSafety,
        UnknownOutcomeAction,
        UnknownOutcomeDecision,
        Usage,
    )
    from kron.worker.activities import (
        TOOL_NOT_EXECUTED,
        TOOL_TRANSPORT_ERROR,
        AgentActivities,
        CancelRunInput,
        ClassifyToolsInput,
        ListToolsInput,
        ModelCallInput,
        NotifyInput,
        ToolCallInput,
    )
    from kron.worker.step_options import (
        CANCEL_RUN_STEP,
        LIST_TOOLS_STEP,
        MODEL_STEP,
        NOTIFY_STEP,
        SAFE_TOOL_STEP,
        UNSAFE_TOOL_STEP,
        StepOptions,
    )

DEFAULT_MAX_TOKENS = 4096
# An unsafe call whose request provably never reached the tool is tried this often in all.
NOT_EXECUTED_ATTEMPTS = 3
# Histories recorded before tool safety existed replay through the old path (see _execute_tool).
TOOL_SAFETY_PATCH = "tool-safety-v1"
HARD_CANCEL_PATCH = "hard-cancel-timer-v1"
# Runs started since keep their conversation in the transcript store and send references (see
# kron.agent_core.transcript_steps); runs started before keep it inline, as their histories say.
TRANSCRIPTS_PATCH = "transcripts-v1"
# Tool input properties through which a tool accepts a caller's idempotency key.
IDEMPOTENCY_KEY_FIELDS = ("idempotency_key", "idempotencyKey", "client_request_id", "request_id")

# Continue-as-new every this many model turns (or sooner when Temporal suggests it), so histories
# stay small and replays after a crash stay fast however long a run goes.
TURNS_PER_HISTORY = 50


class _RunAborted(Exception):
    def __init__(self, error: RunError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class _ApprovalOutcome:
    """What a human decided on a turn's gated tool calls."""

    cancelled: bool = False  # the run was cancelled while it waited
    refusals: dict[str, str] = field(default_factory=dict)  # refused call id -> reason the model sees


@workflow.defn(name=names.AGENT_WORKFLOW)
class AgentWorkflow:
    def __init__(self) -> None:
        self._loop: AgentLoop | None = None
        self._status = RunStatus.QUEUED
        self._result: AgentRunResult | None = None
        self._cancel_requested = False
        self._hard_cancel: asyncio.Task[None] | None = None
        # Decisions are keyed by what they decide (turn, call key) and kept until claimed: a signal
        # may be applied before or after the failure it decides, depending on how the workflow task
        # that carries both is replayed.
        self._pending_approval: PendingApproval | None = None
        self._approvals: dict[int, ApprovalDecision] = {}
        self._pending_unknown: list[PendingUnknownOutcome] = []
        self._unknown_decisions: dict[str, UnknownOutcomeDecision] = {}

    @workflow.run
    async def run(self, input: AgentRunInput) -> AgentRunResult:
        limits = RunLimits(
            model=input.model or "",  # "": the worker's default model, filled in by call_model
            max_tokens=input.max_tokens or DEFAULT_MAX_TOKENS,
            max_iterations=input.max_iterations,
            token_budget=input.token_budget,
            system_prompt=input.system_prompt or DEFAULT_SYSTEM_PROMPT,
        )
        # A checkpoint carries its own kind of conversation; only a fresh run asks which to start.
        transcript_id = (
            workflow.info().workflow_id
            if input.checkpoint is None and self._use_transcripts()
            else None
        )
        loop = self._loop = AgentLoop(limits, input.goal, input.checkpoint, transcript_id=transcript_id)
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
                    response = await self._call_model(
                        ModelCallInput(transcript=step.request)
                        if isinstance(step.request, TranscriptRequest)
                        else ModelCallInput(request=step.request)
                    )
                    if isinstance(response, RunError):
                        result = loop.fail_model_call(response)
                        break
                    loop.record_model_response(response)
                elif isinstance(step, RunTools):
                    approval = await self._approve(input.approval, loop.state.turns, step.calls)
                    if approval.cancelled:
                        continue  # the loop finishes the run
                    refusals = approval.refusals
                    try:
                        results = await asyncio.gather(
                            *(
                                self._refused(c, refusals[c.id])
                                if c.id in refusals
                                else self._execute_tool(input, loop.state.turns, c)
                                for c in step.calls
                            )
                        )
                    except _RunAborted as aborted:
                        result = loop.fail(aborted.error)
                        break
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
    def cancel(self, request: CancelRequest | None = None) -> None:
        """Graceful cancel: finish the current step, then stop with a partial result. With
        `hard_cancel_after_seconds`, a run still going that much later is cancelled outright."""
        self._cancel_requested = True
        if self._loop is not None:
            self._loop.request_cancel()
        grace = request.hard_cancel_after_seconds if request is not None else None
        if grace is not None and self._hard_cancel is None and workflow.patched(HARD_CANCEL_PATCH):
            self._hard_cancel = asyncio.create_task(self._cancel_outright_after(grace))

    @workflow.signal(name=names.SIGNAL_APPROVE)
    def approve(self, decision: ApprovalDecision) -> None:
        """A human's decision on the tool calls waiting for approval at `decision.turn`."""
        self._approvals[decision.turn] = decision

    @workflow.signal(name=names.SIGNAL_RESOLVE_UNKNOWN)
    def resolve_unknown(self, decision: UnknownOutcomeDecision) -> None:
        """A human's decision on the tool calls whose outcome is unknown, by idempotency key."""
        for key in decision.keys:
            self._unknown_decisions[key] = decision

    @workflow.query(name=names.QUERY_STATUS)
    def status(self) -> RunStatus:
        return self._status

    @workflow.query(name=names.QUERY_PROGRESS)
    def progress(self) -> RunProgress:
        if self._loop is None:
            return RunProgress(status=self._status, turns=0, steps=[], usage=Usage())
        progress = self._loop.progress(self._status)
        progress.pending_approval = self._pending_approval
        progress.pending_unknown = list(self._pending_unknown)
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
    def _use_transcripts(self) -> bool:
        return workflow.patched(TRANSCRIPTS_PATCH)

    async def _list_tools(self, input: AgentRunInput) -> list[dict[str, object]]:
        return await workflow.execute_activity_method(
            AgentActivities.list_tools,
            ListToolsInput(user_id=input.user_id, toolkits=input.toolkits),
            **LIST_TOOLS_STEP.as_kwargs(),
        )

    async def _call_model(self, input: ModelCallInput) -> ModelResponse | RunError:
        try:
            return await workflow.execute_activity_method(
                AgentActivities.call_model, input, **MODEL_STEP.as_kwargs()
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

    async def _execute_tool(self, input: AgentRunInput, turn: int, call: ToolCall) -> ToolResult:
        key = f"{workflow.info().workflow_id}/{turn}/{call.id}"
        assert self._loop is not None
        transcript = self._loop.state.transcript
        activity_input = ToolCallInput(
            user_id=input.user_id,
            call=self._with_stable_key(call, key),
            idempotency_key=key,
            transcript_id=transcript.id if transcript is not None else None,
        )
        if not workflow.patched(TOOL_SAFETY_PATCH) or (
            await self._safety_of(call.name) != ToolSafety.UNSAFE
        ):
            # Read-only and idempotent calls are simply retried, after a crash too.
            try:
                return await self._run_tool_activity(activity_input, SAFE_TOOL_STEP)
            except ActivityError as exc:
                return _failed_tool_result(call, exc.cause or exc)
        not_executed = 0
        while True:
            try:
                return await self._run_tool_activity(activity_input, UNSAFE_TOOL_STEP)
            except ActivityError as exc:
                cause = exc.cause
                if isinstance(cause, ApplicationError) and cause.type == TOOL_NOT_EXECUTED:
                    not_executed += 1
                    if not_executed < NOT_EXECUTED_ATTEMPTS:
                        await workflow.sleep(timedelta(seconds=not_executed))
                        continue
                    return _failed_tool_result(call, cause)
            # The call may have acted (worker died mid-call, or the request got through and the
            # answer was lost): never re-run it blindly.
            decision = await self._resolve_unknown(input, call, key)
            if decision.action == UnknownOutcomeAction.RETRY:
                continue
            if decision.action == UnknownOutcomeAction.ABORT:
                raise _RunAborted(
                    RunError(
                        code="outcome_unknown",
                        message=f"run aborted: the outcome of {call.name} ({key}) is unknown",
                    )
                )
            return ToolResult(
                tool_use_id=call.id,
                content=(
                    f"outcome unknown: {call.name} may or may not have taken effect "
                    f"({decision.reason or 'skipped'}); check before repeating it"
                ),
                is_error=True,
                outcome_unknown=True,
            )

    async def _run_tool_activity(self, input: ToolCallInput, options: StepOptions) -> ToolResult:
        """Run the tool activity. Its failure is raised (`ActivityError`) for the caller to judge;
        a hard cancel of the run is raised as `asyncio.CancelledError`."""
        try:
            return await workflow.execute_activity_method(
                AgentActivities.execute_tool, input, **options.as_kwargs()
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError() from exc
            raise

    async def _safety_of(self, tool_name: str) -> ToolSafety:
        assert self._loop is not None
        known = self._loop.state.tool_safety
        if tool_name not in known:
            known.update(
                await workflow.execute_local_activity_method(
                    AgentActivities.classify_tools,
                    ClassifyToolsInput(names=[tool_name]),
                    start_to_close_timeout=timedelta(seconds=10),
                )
            )
        return known.get(tool_name, ToolSafety.UNSAFE)

    def _with_stable_key(self, call: ToolCall, key: str) -> ToolCall:
        """Pass the call's stable key to a tool whose input accepts one (unless the model set it)."""
        assert self._loop is not None
        schema = next(
            (t.get("input_schema") for t in self._loop.state.tools if t.get("name") == call.name), None
        )
        properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
        field = next((f for f in IDEMPOTENCY_KEY_FIELDS if f in properties), None)
        if field is None or field in call.input:
            return call
        return call.model_copy(update={"input": {**call.input, field: key}})

    async def _resolve_unknown(
        self, input: AgentRunInput, call: ToolCall, key: str
    ) -> UnknownOutcomeDecision:
        """Wait for a human's retry/skip/abort on a call whose outcome is unknown; skip on timeout."""
        pending = PendingUnknownOutcome(
            call=PendingToolCall(id=call.id, name=call.name, input=call.input),
            idempotency_key=key,
            timeout_seconds=input.unknown_outcome_timeout_seconds,
        )
        self._pending_unknown.append(pending)
        self._status = RunStatus.WAITING
        workflow.logger.warning("tool call outcome unknown; waiting for a decision")
        try:
            await _wait_with_timeout(
                lambda: key in self._unknown_decisions or self._cancel_requested,
                input.unknown_outcome_timeout_seconds,
            )
            decision = self._unknown_decisions.pop(key, None) or UnknownOutcomeDecision(
                action=UnknownOutcomeAction.SKIP, reason="the run was cancelled", keys=[key]
            )
        except TimeoutError:
            decision = UnknownOutcomeDecision(
                action=UnknownOutcomeAction.SKIP,
                reason=f"no decision within {input.unknown_outcome_timeout_seconds} s",
                keys=[key],
            )
        finally:
            self._pending_unknown.remove(pending)
            if not self._pending_unknown and self._status == RunStatus.WAITING:
                self._status = RunStatus.RUNNING
        return decision

    async def _approve(
        self, policy: ApprovalPolicy | None, turn: int, calls: list[ToolCall]
    ) -> _ApprovalOutcome:
        """Wait for a human on the calls the policy gates."""
        gated = [c for c in calls if policy is not None and policy.requires(c.name)]
        if policy is None or not gated:
            return _ApprovalOutcome()
        self._pending_approval = PendingApproval(
            turn=turn,
            calls=[PendingToolCall(id=c.id, name=c.name, input=c.input) for c in gated],
            timeout_seconds=policy.timeout_seconds,
        )
        self._status = RunStatus.WAITING
        try:
            await _wait_with_timeout(
                lambda: turn in self._approvals or self._cancel_requested, policy.timeout_seconds
            )
            decision = self._approvals.pop(turn, None)
        except TimeoutError:
            decision = ApprovalDecision(
                approved=False, turn=turn, reason=f"no decision within {policy.timeout_seconds} s"
            )
        finally:
            self._pending_approval = None
            self._status = RunStatus.RUNNING
        if decision is None:
            return _ApprovalOutcome(cancelled=True)
        if decision.approved:
            return _ApprovalOutcome()
        reason = f"the user did not approve this call: {decision.reason or 'denied'}"
        return _ApprovalOutcome(refusals={c.id: reason for c in gated})

    @staticmethod
    async def _refused(call: ToolCall, reason: str) -> ToolResult:
        return ToolResult(tool_use_id=call.id, content=reason, is_error=True)

    async def _cancel_outright_after(self, seconds: float) -> None:
        # A timer in the history, not in a gateway's memory. If the run ends first, the workflow
        # completes and the timer goes with it.
        await workflow.sleep(seconds)
        info = workflow.info()
        try:
            await workflow.execute_activity_method(
                AgentActivities.cancel_run,
                CancelRunInput(workflow_id=info.workflow_id, run_id=info.run_id),
                **CANCEL_RUN_STEP.as_kwargs(),
            )
        except ActivityError as error:
            # The graceful cancel still stops the run after its current step.
            workflow.logger.warning("hard cancel failed: %s", error.cause or error)

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
                **NOTIFY_STEP.as_kwargs(),
            )
        except ActivityError:
            workflow.logger.warning("completion webhook failed; the run's result is unaffected")


async def _wait_with_timeout(condition: Callable[[], bool], timeout_seconds: int) -> None:
    """`wait_condition` with a timeout, starting no timer when the condition already holds.

    A decision can arrive in the same workflow task as the failure it decides (e.g. after a worker
    crash both wait in one task); a timer started and cancelled within one task does not replay.
    """
    if not condition():
        await workflow.wait_condition(condition, timeout=timedelta(seconds=timeout_seconds))


def _failed_tool_result(call: ToolCall, cause: BaseException) -> ToolResult:
    reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
    kind = (
        "unreachable"
        if getattr(cause, "type", None) in (TOOL_TRANSPORT_ERROR, TOOL_NOT_EXECUTED)
        else "failed"
    )
    return ToolResult(tool_use_id=call.id, content=f"tool {kind}: {reason}", is_error=True)
