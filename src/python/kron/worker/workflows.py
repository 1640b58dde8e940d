"""`AgentWorkflow`: the agent loop made durable one step at a time.

Every model call and every tool call is its own activity, so a worker that dies mid-run costs at
most the step that was in flight: completed steps are in the workflow history and are never issued
again. The workflow itself stays pure (no I/O, clock or randomness); `AgentLoop` decides each step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from kron.agent_core.loop import (
        DEFAULT_SYSTEM_PROMPT,
        AgentLoop,
        BudgetReached,
        CallModel,
        Finish,
        RunLimits,
        RunTools,
    )
    from kron.agent_core.types import (
        CACHE_TTL_SECONDS,
        ModelRequest,
        ModelResponse,
        ToolCall,
        ToolResult,
        TranscriptRequest,
    )
    from kron.contracts import names
    from kron.contracts.mcp import McpServer
    from kron.contracts.models import (
        AgentRef,
        AgentRunInput,
        AgentRunResult,
        ApprovalDecision,
        ApprovalPolicy,
        BudgetKind,
        BudgetPause,
        BudgetUpdate,
        CancelRequest,
        PendingApproval,
        PendingToolCall,
        PendingUnknownOutcome,
        RunError,
        RunProgress,
        RunStatus,
        ToolPermission,
        ToolPolicy,
        ToolSafety,
        UnknownOutcomeAction,
        UnknownOutcomeDecision,
        Usage,
    )
    from kron.contracts.webhooks import WebhookEvent, chosen
    from kron.worker.activities import (
        BUDGET_REACHED,
        TOOL_NOT_EXECUTED,
        TOOL_TRANSPORT_ERROR,
        AgentActivities,
        CancelRunInput,
        ClassifyToolsInput,
        ListToolsInput,
        ModelCallInput,
        NotifyInput,
        RunEvent,
        RunWaiting,
        SpendContext,
        ToolCallInput,
    )
    from kron.worker.mcp_activities import ListMcpToolsInput, McpActivities, McpCallInput
    from kron.worker.step_options import (
        CANCEL_RUN_STEP,
        LIST_TOOLS_STEP,
        MODEL_STEP,
        NOTIFY_STEP,
        SAFE_TOOL_STEP,
        UNSAFE_TOOL_STEP,
        StepOptions,
    )

# An unsafe call whose request provably never reached the tool is tried this often in all.
NOT_EXECUTED_ATTEMPTS = 3
# Histories recorded before tool safety existed replay through the old path (see _execute_tool).
TOOL_SAFETY_PATCH = "tool-safety-v1"
HARD_CANCEL_PATCH = "hard-cancel-timer-v1"
# USD budgets pause a run (and model calls carry the spend context for the monthly ledger).
BUDGET_PAUSE_PATCH = "budget-pause-v1"
# Runs started since keep their conversation in the transcript store and send references (see
# kron.agent_core.transcript_steps); runs started before keep it inline, as their histories say.
TRANSCRIPTS_PATCH = "transcripts-v1"
# An agent definition's tool policy (allow / ask / deny, safety overrides): only runs that carry one
# ask for it, so histories without a policy never meet this marker.
TOOL_POLICY_PATCH = "tool-policy-v1"
# Runs that name MCP servers list their tools (list_mcp_tools) and call them (call_mcp_tool).
MCP_TOOLS_PATCH = "mcp-tools-v1"
# Runs started since send run.waiting webhooks and the webhook types they chose (kron.worker.webhooks).
WEBHOOKS_PATCH = "webhooks-v1"
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
        # Prompt caching: when the last model call was scheduled, and whether the run ever went
        # longer than a 5-minute cache lifetime between two calls (see _with_cache_ttl).
        self._last_model_call_at: datetime | None = None
        self._waited_past_5m = False
        self._budgets = False  # the budget-pause-v1 path (False when replaying older histories)
        self._budget_usd: float | None = None  # set by a set_budget signal
        self._paused: BudgetPause | None = None
        self._pause_deadline: datetime | None = None
        self._agent: AgentRef | None = None
        self._mcp_servers: list[McpServer] = []  # the run's, for its MCP tool calls
        self._webhooks = False  # the webhooks-v1 path (False when replaying older histories)
        self._unknown_waits: dict[str, int] = {}  # waits per idempotency key (its run.waiting ids)

    @workflow.run
    async def run(self, input: AgentRunInput) -> AgentRunResult:
        limits = RunLimits(
            model=input.model or "",  # "": the worker's default model, filled in by call_model
            max_tokens=input.max_tokens or 0,  # 0: the worker's KRON_MAX_TOKENS, as for the model
            max_iterations=input.max_iterations,
            token_budget=input.token_budget,
            system_prompt=input.system_prompt or DEFAULT_SYSTEM_PROMPT,
            budget_usd=self._budget_usd if self._budget_usd is not None else input.budget_usd,
            budget_soft_limit=input.budget_soft_limit,
        )
        self._budgets = workflow.patched(BUDGET_PAUSE_PATCH)
        self._agent = input.agent
        self._mcp_servers = list(input.mcp_servers)
        self._webhooks = workflow.patched(WEBHOOKS_PATCH)
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
            if (input.toolkits or input.mcp_servers) and not loop.state.tools_loaded:
                tools = await self._list_tools(input) if input.toolkits else []
                if input.mcp_servers and workflow.patched(MCP_TOOLS_PATCH):
                    tools += await self._list_mcp_tools(input)
                loop.set_tools(tools)
            while True:
                step = loop.next_step()
                if isinstance(step, Finish):
                    result = step.result
                    break
                if isinstance(step, BudgetReached):
                    if self._budgets and await self._pause(
                        input,
                        BudgetPause(budget=BudgetKind.RUN, spent_usd=step.spent_usd, limit_usd=step.limit_usd,
                                    timeout_seconds=input.budget_pause_timeout_seconds),
                        resumed=_budget_above(loop, step.spent_usd),
                    ):
                        continue
                    result = loop.end_over_budget(step, input.budget_pause_timeout_seconds)
                    break
                if isinstance(step, CallModel):
                    request = self._with_cache_ttl(input, step.request)
                    spend = self._spend_context(input)
                    response = await self._call_model(
                        ModelCallInput(transcript=request, spend=spend)
                        if isinstance(request, TranscriptRequest)
                        else ModelCallInput(request=request, spend=spend)
                    )
                    if isinstance(response, BudgetPause):  # a monthly budget: the ledger decides
                        if await self._pause(input, response, recheck_seconds=input.budget_recheck_seconds):
                            continue
                        result = loop.end_over_budget(
                            BudgetReached(spent_usd=response.spent_usd, limit_usd=response.limit_usd),
                            input.budget_pause_timeout_seconds,
                        )
                        break
                    if isinstance(response, RunError):
                        result = loop.fail_model_call(response)
                        break
                    self._end_pause()
                    loop.record_model_response(response)
                elif isinstance(step, RunTools):
                    tool_policy = self._tool_policy(input)
                    denied = _denied(tool_policy, step.calls)
                    approval = await self._approve(
                        input.approval, loop.state.turns, [c for c in step.calls if c.id not in denied], input,
                        tool_policy,
                    )
                    if approval.cancelled:
                        continue  # the loop finishes the run
                    refusals = {**denied, **approval.refusals}
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
                    workflow.continue_as_new(input.model_copy(
                        update={"checkpoint": loop.state, "budget_usd": loop.limits.budget_usd}
                    ))
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

    @workflow.signal(name=names.SIGNAL_SET_BUDGET)
    def set_budget(self, update: BudgetUpdate) -> None:
        """A new USD budget for the run: a run paused at its budget goes on once it is above what
        was spent; one below what was spent pauses the run before its next model call."""
        self._budget_usd = update.budget_usd
        if self._loop is not None:
            self._loop.set_budget_usd(update.budget_usd)
        if self._paused is not None and self._paused.budget is BudgetKind.RUN:
            self._paused = self._paused.model_copy(update={"limit_usd": update.budget_usd})

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
        progress.paused = self._paused
        progress.budget_usd = self._loop.limits.budget_usd
        progress.agent = self._agent
        return progress

    @workflow.query(name=names.QUERY_USAGE)
    def usage(self) -> Usage:
        return self._loop.state.usage if self._loop else Usage()

    @workflow.query(name=names.QUERY_RESULT)
    def result(self) -> AgentRunResult:
        if self._result is not None:
            return self._result
        if self._loop is None:
            return AgentRunResult(status=self._status, agent=self._agent)
        return self._loop.partial_result(self._status).model_copy(update={"agent": self._agent})

    # ---- steps ---------------------------------------------------------------------------------
    def _tool_policy(self, input: AgentRunInput) -> ToolPolicy | None:
        """The run's tool policy, on the tool-policy-v1 path (asked only by runs that have one)."""
        return input.tool_policy if input.tool_policy is not None and workflow.patched(TOOL_POLICY_PATCH) else None

    def _use_transcripts(self) -> bool:
        return workflow.patched(TRANSCRIPTS_PATCH)

    async def _list_tools(self, input: AgentRunInput) -> list[dict[str, object]]:
        return await workflow.execute_activity_method(
            AgentActivities.list_tools,
            ListToolsInput(user_id=input.user_id, toolkits=input.toolkits),
            **LIST_TOOLS_STEP.as_kwargs(),
        )

    async def _list_mcp_tools(self, input: AgentRunInput) -> list[dict[str, object]]:
        """The MCP servers' tools, once per run: their servers and safety classes are kept in the
        loop's state (carried across continue-as-new), so calls need no further listing."""
        assert self._loop is not None
        toolset = await workflow.execute_activity_method(
            McpActivities.list_mcp_tools,
            ListMcpToolsInput(servers=input.mcp_servers),
            **LIST_TOOLS_STEP.as_kwargs(),
        )
        self._loop.state.mcp_tools.update(toolset.refs)
        self._loop.state.tool_safety.update(toolset.safety)
        return list(toolset.tools)

    def _with_cache_ttl(
        self, input: AgentRunInput, request: ModelRequest | TranscriptRequest
    ) -> ModelRequest | TranscriptRequest:
        """The run's cache TTL; or 1h, unasked, once the run has gone more than 5 min between two
        model calls (an approval, an unknown outcome, a slow tool, a pause). Deterministic: it
        reads workflow time only, and changes the activity's input, never the commands.

        Why (per token, over base input: 5m write 1.25x, 1h write 2x, read 0.1x): after such a
        wait the 5m entries are gone, and this request writes the whole prefix P again. Every
        request writes only its new tail, but its entry covers the whole prefix: written at 1h it
        survives the next wait of 5-60 min, whose request then reads the prefix P_w (>= P) at 0.1x
        instead of writing it again at 1.25x, saving 1.15x P_w. The cost is 0.75x on each token
        written from here on: 0.75x P_end at most (P_end the prefix when the run ends), i.e. 60%
        more than those writes cost at 5m, and only those. So 1h is cheaper once one more long wait
        comes after the prefix reached 65% of its final size (1.15x P_w > 0.75x P_end), or two come
        at all unless the prefix triples after this wait (2 x 1.15x P > 0.75x P_end); and a run that
        waited once for a human is the run likely to wait again. A run that sets `cache_ttl` gets
        what it set; KRON_PROMPT_CACHE_TTL=1h makes it moot. The switch lasts for the current
        history: after a continue-as-new (every 50 turns) the run is back at its default until it
        waits long again.
        """
        now = workflow.now()
        if (
            self._last_model_call_at is not None
            and (now - self._last_model_call_at).total_seconds() > CACHE_TTL_SECONDS["5m"]
        ):
            self._waited_past_5m = True
        self._last_model_call_at = now
        ttl = input.cache_ttl or ("1h" if self._waited_past_5m else None)
        return request if ttl is None else request.model_copy(update={"cache_ttl": ttl})

    async def _call_model(self, input: ModelCallInput) -> ModelResponse | RunError | BudgetPause:
        try:
            return await workflow.execute_activity_method(
                AgentActivities.call_model, input, **MODEL_STEP.as_kwargs()
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, CancelledError):
                raise asyncio.CancelledError() from exc  # a hard cancel of the run, not a failure
            if isinstance(cause, ApplicationError) and cause.type == BUDGET_REACHED and cause.details:
                return BudgetPause.model_validate(cause.details[0])
            if isinstance(cause, ApplicationError):
                details = cause.details[0] if cause.details else {}
                status_code = details.get("status_code") if isinstance(details, dict) else None
                return RunError(
                    code=cause.type or "model_error", message=cause.message, status_code=status_code
                )
            return RunError(code="model_error", message=str(cause or exc))

    def _spend_context(self, input: AgentRunInput) -> SpendContext | None:
        if not self._budgets:
            return None  # older runs: no ledger entries, no monthly check (as they were recorded)
        return SpendContext(
            user_id=input.user_id,
            task_id=workflow.info().workflow_id,
            schedule_name=input.schedule_name,
            schedule_monthly_budget_usd=input.schedule_monthly_budget_usd,
            pause_timeout_seconds=input.budget_pause_timeout_seconds,
        )

    async def _pause(
        self,
        input: AgentRunInput,
        pause: BudgetPause,
        *,
        resumed: Callable[[], bool] = lambda: False,
        recheck_seconds: int | None = None,
    ) -> bool:
        """Status `paused` until `resumed()`, a cancel, or (with `recheck_seconds`) the time to ask
        the ledger again: True, the run goes on (its loop decides what next). False once the pause
        has lasted `budget_pause_timeout_seconds` in all: the run ends as budget_exceeded. The
        deadline is a durable timer, and it counts from the first pause of a streak."""
        now = workflow.now()
        starting = self._pause_deadline is None
        if self._pause_deadline is None:
            self._pause_deadline = now + timedelta(seconds=input.budget_pause_timeout_seconds)
        self._paused, self._status = pause, RunStatus.PAUSED
        if starting:
            workflow.logger.info("run paused: %s budget reached", pause.budget.value)
            await self._notify(input, RunEvent.BUDGET_PAUSED, self._loop_result(RunStatus.PAUSED), pause)
        remaining = self._pause_deadline - workflow.now()
        wait = remaining if recheck_seconds is None else min(remaining, timedelta(seconds=recheck_seconds))

        def go_on() -> bool:
            return resumed() or self._cancel_requested

        if remaining <= timedelta(0) and not go_on():
            return False
        try:
            if not go_on():
                await workflow.wait_condition(go_on, timeout=wait)
        except TimeoutError:
            # Time to ask the ledger again (the call checks it), unless the pause is over.
            return recheck_seconds is not None and workflow.now() < self._pause_deadline
        self._end_pause()
        return True

    def _end_pause(self) -> None:
        if self._pause_deadline is not None:
            self._paused, self._pause_deadline, self._status = None, None, RunStatus.RUNNING

    def _loop_result(self, status: RunStatus) -> AgentRunResult:
        assert self._loop is not None
        return self._loop.partial_result(status)

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
            await self._safety_of(call.name, self._tool_policy(input)) != ToolSafety.UNSAFE
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
        assert self._loop is not None
        mcp = self._loop.state.mcp_tools.get(input.call.name)
        try:
            if mcp is not None:
                server = next(s for s in self._mcp_servers if s.name == mcp.server)
                return await workflow.execute_activity_method(
                    McpActivities.call_mcp_tool,
                    McpCallInput(server=server, tool=mcp.tool, call=input.call,
                                 idempotency_key=input.idempotency_key, transcript_id=input.transcript_id),
                    **options.as_kwargs(),
                )
            return await workflow.execute_activity_method(
                AgentActivities.execute_tool, input, **options.as_kwargs()
            )
        except ActivityError as exc:
            if isinstance(exc.cause, CancelledError):
                raise asyncio.CancelledError() from exc
            raise

    async def _safety_of(self, tool_name: str, policy: ToolPolicy | None = None) -> ToolSafety:
        assert self._loop is not None
        override = policy.safety_of(tool_name) if policy is not None else None
        if override is not None:  # the agent's own classification beats the worker's
            return override
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
        self._unknown_waits[key] = self._unknown_waits.get(key, 0) + 1
        await self._notify_waiting(
            input, RunWaiting(reason="unknown_outcome", unknown_outcome=pending),
            f"unknown/{key}/{self._unknown_waits[key]}",
        )
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
        self,
        policy: ApprovalPolicy | None,
        turn: int,
        calls: list[ToolCall],
        input: AgentRunInput,
        tool_policy: ToolPolicy | None = None,
    ) -> _ApprovalOutcome:
        """Wait for a human on the calls the policy gates (and those the agent's tool policy asks about)."""
        gated = [
            c for c in calls
            if (policy is not None and policy.requires(c.name))
            or (tool_policy is not None and tool_policy.permission(c.name) is ToolPermission.ASK)
        ]
        if not gated:
            return _ApprovalOutcome()
        policy = policy or ApprovalPolicy()
        self._pending_approval = PendingApproval(
            turn=turn,
            calls=[PendingToolCall(id=c.id, name=c.name, input=c.input) for c in gated],
            timeout_seconds=policy.timeout_seconds,
        )
        self._status = RunStatus.WAITING
        await self._notify_waiting(input, RunWaiting(reason="approval", approval=self._pending_approval),
                                   f"approval/{turn}")
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
        result.agent = self._agent
        self._status = result.status
        self._result = result
        self._paused = None
        await self._notify(input, RunEvent.FINISHED, result)

    async def _notify_waiting(self, input: AgentRunInput, waiting: RunWaiting, occurrence: str) -> None:
        """A run.waiting webhook (webhooks-v1), when the run has a callback_url and chose the type."""
        if self._webhooks and input.callback_url and chosen(input.webhook_events, WebhookEvent.RUN_WAITING):
            await self._notify(input, RunEvent.WAITING, self._loop_result(RunStatus.WAITING),
                               waiting=waiting, occurrence=occurrence)

    async def _notify(
        self, input: AgentRunInput, event: RunEvent, result: AgentRunResult, paused: BudgetPause | None = None,
        *, waiting: RunWaiting | None = None, occurrence: str = "",
    ) -> None:
        notify = NotifyInput(
            workflow_id=workflow.info().workflow_id,
            callback_url=input.callback_url,
            result=result,
            event=event,
            paused=paused,
            webhook_events=input.webhook_events,
            waiting=waiting,
            occurrence=occurrence,
        )
        try:
            await workflow.execute_activity_method(
                AgentActivities.notify_run_finished, notify, **NOTIFY_STEP.as_kwargs()
            )
        except ActivityError:
            workflow.logger.warning("%s webhook failed; the run is unaffected", event.value)


async def _wait_with_timeout(condition: Callable[[], bool], timeout_seconds: int) -> None:
    """`wait_condition` with a timeout, starting no timer when the condition already holds.

    A decision can arrive in the same workflow task as the failure it decides (e.g. after a worker
    crash both wait in one task); a timer started and cancelled within one task does not replay.
    """
    if not condition():
        await workflow.wait_condition(condition, timeout=timedelta(seconds=timeout_seconds))


def _denied(policy: ToolPolicy | None, calls: list[ToolCall]) -> dict[str, str]:
    """Calls the agent's tool policy denies: call id -> the refusal the model gets instead."""
    if policy is None:
        return {}
    return {
        c.id: f"refused: this agent's tool policy does not allow {c.name}; do not call it again"
        for c in calls
        if policy.permission(c.name) is ToolPermission.DENY
    }


def _budget_above(loop: AgentLoop, spent_usd: float) -> Callable[[], bool]:
    """Whether the run's budget (raised by set_budget) is now above what it had spent."""
    return lambda: (loop.limits.budget_usd or 0.0) > spent_usd


def _failed_tool_result(call: ToolCall, cause: BaseException) -> ToolResult:
    reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
    kind = (
        "unreachable"
        if getattr(cause, "type", None) in (TOOL_TRANSPORT_ERROR, TOOL_NOT_EXECUTED)
        else "failed"
    )
    return ToolResult(tool_use_id=call.id, content=f"tool {kind}: {reason}", is_error=True)
