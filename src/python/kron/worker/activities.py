"""Activities: every piece of I/O an agent run does, one step per activity.

Each activity heartbeats while it works, so a worker that dies is noticed within the heartbeat
timeout and the step is retried elsewhere, and a hard cancel reaches a step that is still running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel
from temporalio import activity
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from kron.agent_core.ports import LLM, ToolProvider
from kron.agent_core.pricing import PriceTable
from kron.agent_core.tool_safety import ToolSafetyPolicy
from kron.agent_core.transcript_steps import PreparedCall, TranscriptSteps
from kron.agent_core.types import (
    ModelCallError,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolResult,
    ToolTransportError,
    TranscriptRequest,
)
from kron.common.logging import get_logger
from kron.common.transcripts import MemoryTranscriptStore, TranscriptMissing, TranscriptStore
from kron.contracts import names
from kron.contracts.models import (
    DEFAULT_CONTEXT_WINDOW_TOKENS,
    AgentRunResult,
    BudgetKind,
    BudgetPause,
    CacheTTL,
    PendingApproval,
    PendingUnknownOutcome,
    RunStatus,
    ToolSafety,
)
from kron.contracts.spend import MonthlySpend, SpendEntry, month_of, spend_ledger_id
from kron.contracts.webhooks import (
    DEFAULT_WEBHOOK_RETRY_SECONDS,
    SIGNAL_DELIVER,
    WEBHOOK_DELIVERY_WORKFLOW,
    WebhookEvent,
    WebhookMessage,
    chosen,
    delivery_workflow_id,
    webhook_message,
)
from kron.worker import metrics
from kron.worker.step_options import HEARTBEAT_INTERVAL
from kron.worker.webhook_signing import WebhookSigner
from kron.worker.webhooks import WebhookActivities

log = get_logger(__name__)

# ApplicationError types the workflow reads. A transport failure is "not executed" only when the
# request certainly never reached the tool; an unsafe call may then be retried blindly.
TOOL_TRANSPORT_ERROR = "tool_transport_error"
TOOL_NOT_EXECUTED = "tool_not_executed"
# call_model refused to call: a monthly budget is spent. Its details[0] is a BudgetPause.
BUDGET_REACHED = "budget_reached"
# Content a run's transcript should hold is gone: retrying cannot bring it back.
TRANSCRIPT_MISSING = "transcript_missing"
# A tool result that cannot be stored goes inline into the history instead (never lost: the call
# may have acted), after this many tries.
TOOL_RESULT_STORE_ATTEMPTS = 3


class SpendContext(BaseModel):
    """Whose spend a model call is, for the monthly ledger and budget (None on old runs)."""

    user_id: str
    task_id: str
    schedule_name: str | None = None
    schedule_monthly_budget_usd: float | None = None
    pause_timeout_seconds: int  # shown in the BudgetPause a reached monthly budget returns


class ModelCallInput(BaseModel):
    # One of the two: the whole request (runs started before transcripts-v1), or its references.
    request: ModelRequest | None = None
    transcript: TranscriptRequest | None = None
    spend: SpendContext | None = None


class RunEvent(StrEnum):
    """What a notify step reports (its webhook type: kron.contracts.webhooks.WebhookEvent)."""

    FINISHED = "finished"  # run.completed, run.failed or run.cancelled, by the result's status
    BUDGET_PAUSED = "budget_paused"  # run.paused
    WAITING = "waiting"  # run.waiting (webhooks-v1)


class ListToolsInput(BaseModel):
    user_id: str
    toolkits: list[str]


class ToolCallInput(BaseModel):
    user_id: str
    call: ToolCall
    # Stable across retries and crashes: "<workflow id>/<turn>/<tool_use id>".
    idempotency_key: str
    # transcripts-v1: store the result in this run's transcript and return it by reference.
    transcript_id: str | None = None


class ClassifyToolsInput(BaseModel):
    names: list[str]


class RunWaiting(BaseModel):
    """`data.waiting` of a `run.waiting` webhook: a human's decision on gated tool calls
    (`approval`: `POST /tasks/{id}/approve` or `/deny`) or on a call whose outcome is unknown
    (`unknown_outcome`: `POST /tasks/{id}/resolve`)."""

    reason: Literal["approval", "unknown_outcome"]
    approval: PendingApproval | None = None
    unknown_outcome: PendingUnknownOutcome | None = None


class NotifyInput(BaseModel):
    workflow_id: str
    callback_url: str | None
    result: AgentRunResult
    event: RunEvent = RunEvent.FINISHED
    paused: BudgetPause | None = None  # with event budget_paused
    # webhooks-v1: the webhook types the run chose (None: the default) and, for run.waiting, what it
    # waits for and which wait this is (part of the stable webhook id).
    webhook_events: list[WebhookEvent] | None = None
    waiting: RunWaiting | None = None
    occurrence: str = ""


class CancelRunInput(BaseModel):
    workflow_id: str
    run_id: str


@asynccontextmanager
async def heartbeating(interval_seconds: float) -> AsyncIterator[None]:
    """Heartbeat every `interval_seconds` while the body runs (no-op outside an activity). The first
    beat comes after one interval: the attempt's start already counts as one, and a step shorter
    than that then costs the server no heartbeat RPC at all."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


class AgentActivities:
    """Holds the ports (LLM, tools) one worker process shares across all runs."""

    def __init__(
        self,
        llm: LLM,
        tools: ToolProvider,
        *,
        default_model: str,
        default_max_tokens: int = 4096,
        default_cache_ttl: CacheTTL = "5m",
        safety_policy: ToolSafetyPolicy | None = None,
        webhook_secret: str | None = None,
        webhook_allow_private_networks: bool = False,
        webhook_timeout_seconds: float = 10.0,
        webhook_retry_seconds: int = DEFAULT_WEBHOOK_RETRY_SECONDS,
        heartbeat_interval_seconds: float = HEARTBEAT_INTERVAL.total_seconds(),
        prices: PriceTable | None = None,
        user_monthly_budget_usd: float | None = None,
        user_monthly_budgets_usd: dict[str, float] | None = None,
        transcripts: TranscriptStore | None = None,
        context_windows: Mapping[str, int] | None = None,
    ) -> None:
        """`transcripts`: where runs keep their conversations; the default, in this process's memory,
        serves only workers that never share a run with another process (tests). `webhook_secret`:
        `whsec_` secrets, space-separated (all sign each delivery); raises BadWebhookSecret."""
        self._llm = llm
        self._tools = tools
        self._default_model = default_model
        self._default_max_tokens = default_max_tokens
        self._default_cache_ttl = default_cache_ttl
        self._safety = safety_policy or ToolSafetyPolicy()
        self.webhooks = WebhookActivities(
            WebhookSigner.from_secrets(webhook_secret or ""),
            allow_private_networks=webhook_allow_private_networks,
            timeout_seconds=webhook_timeout_seconds,
            retry_period_seconds=webhook_retry_seconds,
        )
        self._heartbeat_interval = heartbeat_interval_seconds
        self._prices = prices or PriceTable.with_overrides()
        self._user_monthly_budget = user_monthly_budget_usd
        self._user_monthly_budgets = dict(user_monthly_budgets_usd or {})
        metrics.init_model_cost(self._prices.model_ids)
        windows = dict(context_windows or {})
        self._transcripts = TranscriptSteps(
            transcripts if transcripts is not None else MemoryTranscriptStore(),
            lambda model: windows.get(model, DEFAULT_CONTEXT_WINDOW_TOKENS),
        )

    @activity.defn(name="call_model")
    async def call_model(self, input: ModelCallInput) -> ModelResponse:
        prepared: PreparedCall | None = None
        if input.transcript is not None:
            prepared = await self._prepare(input.transcript)
            request = prepared.request
        elif input.request is not None:
            request = input.request
        else:
            raise ApplicationError("call_model: no request", type="bad_input", non_retryable=True)
        # What the run left open is this deployment's to fill (KRON_MODEL, KRON_MAX_TOKENS,
        # KRON_PROMPT_CACHE_TTL): settings are read here, never in the workflow.
        request = request.model_copy(update={
            "model": request.model or self._default_model,
            "max_tokens": request.max_tokens or self._default_max_tokens,
            "cache_ttl": request.cache_ttl or self._default_cache_ttl,
        })
        month = month_of(datetime.now(UTC))  # the wall clock, here in the activity: recorded once
        if input.spend is not None:
            await self._check_monthly_budget(input.spend, month)
        started = time.monotonic()
        try:
            async with heartbeating(self._heartbeat_interval):
                response = await self._llm.complete(request)
        except ModelCallError as exc:
            metrics.MODEL_CALLS.labels(outcome=exc.code).inc()
            log.warning("model call failed", code=exc.code, status_code=exc.status_code,
                        retryable=exc.retryable, attempt=activity.info().attempt)
            raise ApplicationError(
                exc.message,
                {"status_code": exc.status_code},
                type=exc.code,
                non_retryable=not exc.retryable,
                next_retry_delay=(
                    timedelta(seconds=exc.retry_after_seconds)
                    if exc.retry_after_seconds is not None
                    else None
                ),
            ) from None
        finally:
            metrics.STEP_DURATION.labels(kind="model").observe(time.monotonic() - started)
        metrics.MODEL_CALLS.labels(outcome="ok").inc()
        metrics.count_tokens(response)
        # Priced here, in the activity: the cost is recorded in the run's history with the response
        # and replays as it was, whatever the price table says later.
        model = response.model or request.model
        response.cost_usd = self._prices.response_cost_usd(response, request.model)
        model_id = self._prices.model_id(model)
        if response.cost_usd is None:
            metrics.MODEL_CALLS_UNPRICED.inc()
            log.warning("model call has no price: its cost is unknown", model=model)
        elif model_id is not None:
            metrics.MODEL_COST.labels(model=model_id).inc(response.cost_usd)
        log.info("model call done", stop_reason=response.stop_reason,
                 input_tokens=response.input_tokens, output_tokens=response.output_tokens,
                 cache_read_input_tokens=response.cache_read_input_tokens,
                 cache_creation_input_tokens=response.cache_creation_input_tokens,
                 cache_ttl=request.cache_ttl, cost_usd=response.cost_usd,
                 duration_seconds=round(response.duration_seconds, 4))
        if input.spend is not None:
            entry = SpendEntry(model=model_id or model, cost_usd=response.cost_usd,
                               schedule_name=input.spend.schedule_name, task_id=input.spend.task_id)
            await self._record_spend(input.spend.user_id, month, entry)
        if prepared is not None:
            # A store failure here is retried with the step (the model is asked again).
            response = await self._transcripts.finish(prepared, response)
        return response

    def monthly_budget_of(self, user_id: str) -> float | None:
        return self._user_monthly_budgets.get(user_id, self._user_monthly_budget)

    async def _check_monthly_budget(self, spend: SpendContext, month: str) -> None:
        """Refuse the call (BUDGET_REACHED, not retried: the workflow pauses) when the user's
        or the run's schedule's monthly budget is spent. Read from the ledger before the call: a call already in flight
        elsewhere may still go over by its own cost, as with a run's budget."""
        user_limit = self.monthly_budget_of(spend.user_id)
        schedule_limit = spend.schedule_monthly_budget_usd if spend.schedule_name else None
        if user_limit is None and schedule_limit is None:
            return
        ledger = await self._monthly_spend(spend.user_id, month)
        if ledger is None:
            return
        reached: list[tuple[BudgetKind, float, float]] = []
        if user_limit is not None:
            reached.append((BudgetKind.USER_MONTH, ledger.total_usd, user_limit))
        if schedule_limit is not None and spend.schedule_name is not None:
            reached.append((BudgetKind.SCHEDULE_MONTH, ledger.by_schedule.get(spend.schedule_name, 0.0),
                            schedule_limit))
        over = next(((kind, spent, limit) for kind, spent, limit in reached if spent >= limit), None)
        if over is None:
            return
        kind, spent, limit = over
        pause = BudgetPause(budget=kind, spent_usd=spent, limit_usd=limit,
                            timeout_seconds=spend.pause_timeout_seconds)
        raise ApplicationError(
            f"{kind.value} budget of ${limit:.4f} reached (${spent:.4f} spent in {month})",
            pause.model_dump(mode="json"),
            type=BUDGET_REACHED,
            non_retryable=True,
        )

    async def _monthly_spend(self, user_id: str, month: str) -> MonthlySpend | None:
        """The user's ledger for `month`; an empty one if none exists yet; None if it cannot be
        read (then the call goes ahead: an unreadable ledger must not stop every run)."""
        handle = activity.client().get_workflow_handle(spend_ledger_id(user_id, month))
        try:
            spent: MonthlySpend = await handle.query(
                names.QUERY_SPEND, result_type=MonthlySpend, rpc_timeout=timedelta(seconds=5)
            )
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                return MonthlySpend(user_id=user_id, month=month)
            log.warning("spend ledger unreadable; monthly budget not checked", rpc_status=error.status.name)
            return None
        except Exception as error:  # noqa: BLE001 - a failed query: same as unreadable
            log.warning("spend ledger query failed; monthly budget not checked", exc_type=type(error).__name__)
            return None
        return spent

    async def _record_spend(self, user_id: str, month: str, entry: SpendEntry) -> None:
        """Add the call to the user's monthly ledger (signal-with-start). A failure is logged, not
        raised: failing the activity now would make the model call again and spend twice."""
        try:
            await activity.client().start_workflow(
                names.SPEND_LEDGER_WORKFLOW,
                MonthlySpend(user_id=user_id, month=month),
                id=spend_ledger_id(user_id, month),
                task_queue=activity.info().task_queue,
                start_signal=names.SIGNAL_RECORD_SPEND,
                start_signal_args=[entry],
                rpc_timeout=timedelta(seconds=5),
            )
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.warning("spend not recorded in the monthly ledger", exc_type=type(error).__name__)

    async def _prepare(self, call: TranscriptRequest) -> PreparedCall:
        """The full request from the transcript store. Content that is gone fails the run clearly
        (non-retryable); a store that is unreachable is retried with the step."""
        try:
            return await self._transcripts.prepare(call, self._default_model)
        except TranscriptMissing as missing:
            metrics.MODEL_CALLS.labels(outcome=TRANSCRIPT_MISSING).inc()
            log.error("transcript content missing", run_id=missing.run_id, sha256=missing.sha256)
            raise ApplicationError(str(missing), type=TRANSCRIPT_MISSING, non_retryable=True) from None

    @activity.defn(name="list_tools")
    async def list_tools(self, input: ListToolsInput) -> list[dict[str, Any]]:
        try:
            async with heartbeating(self._heartbeat_interval):
                return await asyncio.to_thread(self._tools.list_tools, input.user_id, input.toolkits)
        except ToolTransportError as exc:
            raise ApplicationError(str(exc), type=TOOL_TRANSPORT_ERROR) from None

    @activity.defn(name="execute_tool")
    async def execute_tool(self, input: ToolCallInput) -> ToolResult:
        started = time.monotonic()
        try:
            async with heartbeating(self._heartbeat_interval):
                result = await asyncio.to_thread(self._tools.execute, input.user_id, input.call)
        except ToolTransportError as exc:
            metrics.TOOL_CALLS.labels(outcome="transport_error").inc()
            kind = TOOL_TRANSPORT_ERROR if exc.maybe_executed else TOOL_NOT_EXECUTED
            raise ApplicationError(str(exc), type=kind) from None
        finally:
            metrics.STEP_DURATION.labels(kind="tool").observe(time.monotonic() - started)
        metrics.TOOL_CALLS.labels(outcome="error" if result.is_error else "ok").inc()
        log.info("tool call done", tool=input.call.name, is_error=result.is_error,
                 duration_seconds=round(result.duration_seconds, 4))
        if input.transcript_id is not None:
            return await self._store_tool_result(input.transcript_id, result)
        return result

    async def _store_tool_result(self, run_id: str, result: ToolResult) -> ToolResult:
        """The result by reference. The call already ran, so a store that keeps failing must not
        fail the step (an unsafe call would become "outcome unknown"): the result then goes inline."""
        for attempt in range(1, TOOL_RESULT_STORE_ATTEMPTS + 1):
            try:
                return await self._transcripts.store_tool_result(run_id, result)
            except Exception as exc:  # noqa: BLE001 - any store failure: try again, then inline
                log.warning("storing a tool result failed", attempt=attempt, error=type(exc).__name__)
                if attempt < TOOL_RESULT_STORE_ATTEMPTS:
                    await asyncio.sleep(0.5 * attempt)
        return result

    async def store_tool_result(self, run_id: str, result: ToolResult) -> ToolResult:
        """The same for results of the other tool sources' activities (MCP)."""
        return await self._store_tool_result(run_id, result)

    @activity.defn(name="classify_tools")
    async def classify_tools(self, input: ClassifyToolsInput) -> dict[str, ToolSafety]:
        """This deployment's safety class of each tool (run as a local activity: recorded once)."""
        return {name: self._safety.classify(name) for name in input.names}

    @activity.defn(name="notify_run_finished")
    async def notify_run_finished(self, input: NotifyInput) -> None:
        """Count the event and, when the run has a callback_url and chose this event type, hand it
        to the run's delivery workflow (signal-with-start), which sends and retries it: this step
        never waits for the receiver."""
        finished = input.event is RunEvent.FINISHED
        if activity.info().attempt == 1:
            if finished:
                metrics.RUNS.labels(status=input.result.status.value).inc()
            elif input.paused is not None:
                metrics.RUN_PAUSES.labels(budget=input.paused.budget.value).inc()
        if not input.callback_url:
            return
        event, occurrence, data = _webhook_event(input)
        handle_id = delivery_workflow_id(input.workflow_id)
        if not chosen(input.webhook_events, event):
            if finished:  # a delivery workflow the run started earlier may end now
                await _tell_final(handle_id)
            return
        message = webhook_message(
            input.workflow_id, event, url=input.callback_url, timestamp=datetime.now(UTC), data=data,
            occurrence=occurrence, final=finished,
        )
        try:
            await activity.client().start_workflow(
                WEBHOOK_DELIVERY_WORKFLOW,
                id=handle_id,
                task_queue=activity.info().task_queue,
                start_signal=SIGNAL_DELIVER,
                start_signal_args=[message],
                # Closed: the run's last event was handled (this step is a retry): never a second log.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=timedelta(seconds=10),
            )
        except WorkflowAlreadyStartedError:
            log.info("webhook delivery already closed", event=event.value)

    async def aclose(self) -> None:
        await self.webhooks.aclose()

    @activity.defn(name="cancel_run")
    async def cancel_run(self, input: CancelRunInput) -> None:
        """Ask Temporal to cancel this run, as a client would: a workflow cannot request its own
        cancellation, and only a Temporal cancel reaches the activities in flight."""
        await activity.client().get_workflow_handle(input.workflow_id, run_id=input.run_id).cancel()

    def all(self) -> list[Any]:
        return [
            self.call_model,
            self.list_tools,
            self.execute_tool,
            self.classify_tools,
            self.notify_run_finished,
            self.cancel_run,
            self.webhooks.deliver_webhook,
        ]


_FINISHED_EVENTS = {RunStatus.COMPLETED: WebhookEvent.RUN_COMPLETED, RunStatus.CANCELLED: WebhookEvent.RUN_CANCELLED}


def _webhook_event(input: NotifyInput) -> tuple[WebhookEvent, str, dict[str, Any]]:
    """The event type, which occurrence of it this is (for its stable id) and its `data`."""
    data: dict[str, Any] = {"task_id": input.workflow_id, "result": input.result.model_dump(mode="json")}
    if input.event is RunEvent.FINISHED:
        # failed, max_iterations, budget_exceeded: run.failed (data.result.status says which)
        return _FINISHED_EVENTS.get(input.result.status, WebhookEvent.RUN_FAILED), "", data
    if input.event is RunEvent.BUDGET_PAUSED:
        data["paused"] = input.paused.model_dump(mode="json") if input.paused else None
        budget = input.paused.budget.value if input.paused else ""
        # A pause streak starts at most once per turn and budget.
        return WebhookEvent.RUN_PAUSED, input.occurrence or f"{input.result.turns}/{budget}", data
    data["waiting"] = input.waiting.model_dump(mode="json") if input.waiting else None
    return WebhookEvent.RUN_WAITING, input.occurrence, data


async def _tell_final(workflow_id: str) -> None:
    """Tell a run's delivery workflow, if there is one, that no more events come."""
    try:
        await activity.client().get_workflow_handle(workflow_id).signal(
            SIGNAL_DELIVER, WebhookMessage(final=True), rpc_timeout=timedelta(seconds=10)
        )
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
