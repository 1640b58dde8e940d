"""The scheduler's workflows, on its own task queue.

`ScheduledFireWorkflow` is what a Temporal Schedule starts at each fire: it re-runs the toolkit
preflight (a toolkit disconnected since the schedule was made records `preflight_failed` with a
connect link instead of starting a doomed run), then runs `AgentWorkflow` (by name, on the agent
task queue) as a child and waits for it, so the schedule's overlap policy covers the whole run.

`ScheduleLedgerWorkflow` (one per schedule) is the run history: fires report their records to it,
and it turns Temporal's count of overlap skips into records of their own. Trimmed to
`max_run_history`; runs that are still going are never trimmed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from kron.common import agent_runs
    from kron.common.schedules import ledger_config
    from kron.contracts import names
    from kron.contracts.agents import AgentOverrides, apply_agent
    from kron.contracts.models import AgentRunResult, RunStatus
    from kron.contracts.schedules import (
        QUERY_LEDGER_HISTORY,
        SCHEDULE_LEDGER_WORKFLOW,
        SCHEDULED_FIRE_WORKFLOW,
        SCHEDULED_START_TIME_ATTRIBUTE,
        SIGNAL_LEDGER_CONFIGURE,
        SIGNAL_LEDGER_RECORD,
        DispatchStatus,
        FireOutcome,
        FireRecord,
        FireTrigger,
        LedgerConfig,
        LedgerInput,
        RecordFire,
        RunHistory,
        ScheduledFireInput,
    )
    from kron.contracts.webhooks import (
        WEBHOOK_DELIVERY_WORKFLOW,
        WebhookEvent,
        WebhookMessage,
        chosen,
        delivery_workflow_id,
        webhook_message,
    )
    from kron.scheduler.activities import (
        McpPreflightInput,
        ObserveInput,
        ObserveResult,
        PreflightInput,
        PreflightResult,
        RecordFireInput,
        ResolveAgentInput,
        SchedulerActivities,
    )

SCHEDULED_START_TIME = SearchAttributeKey.for_datetime(SCHEDULED_START_TIME_ATTRIBUTE)

# Fires of schedules that name an agent resolve it first (no version: the latest at each fire).
AGENT_REF_PATCH = "agent-ref-v1"
_AGENT_ERRORS = {
    "agent_not_found": "The schedule's agent (or its pinned version) does not exist (or was deleted)",
    "agent_limits": "The schedule loosens its agent's limits or widens its toolkits",
    "agent_unavailable": "The agent registry did not answer",
}

# Composio hiccups are retried for about half a minute; after that the fire records preflight_failed.
PREFLIGHT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=4,
)
# Recording must not be lost: retried until it lands (Temporal down is the only way it fails).
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
OBSERVE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)
# Fires since send schedule.fire_failed webhooks (through the agent worker's WebhookDelivery).
WEBHOOKS_PATCH = "webhooks-v1"
# A ledger continues as new after this many fire records and observations (each costs a handful of
# history events), keeping its history well under Temporal's limits however long a run polls.
EVENTS_PER_LEDGER_RUN = 200
# Fires of schedules that name MCP servers check them too (and pass them to the run).
MCP_TOOLS_PATCH = "mcp-tools-v1"


@workflow.defn(name=SCHEDULED_FIRE_WORKFLOW)
class ScheduledFireWorkflow:
    def __init__(self) -> None:
        self._record: FireRecord | None = None

    @workflow.run
    async def run(self, input: ScheduledFireInput) -> FireRecord:
        info = workflow.info()
        definition = input.definition
        config = ledger_config(definition).model_copy(update={"agent_task_queue": input.agent_task_queue})
        scheduled_at = info.typed_search_attributes.get(SCHEDULED_START_TIME)
        record = self._record = FireRecord(
            fire_id=info.workflow_id,
            fire_run_id=info.run_id,
            trigger=input.trigger,
            scheduled_at=scheduled_at or info.start_time,
            fired_at=info.start_time,
            dispatch=DispatchStatus.STARTED,
        )
        child: workflow.ChildWorkflowHandle[Any, AgentRunResult] | None = None
        try:
            agent: dict[str, Any] | None = None
            if definition.run.agent_ref is not None:
                resolved = await self._resolve_agent(input)
                if isinstance(resolved, str):
                    record = self._update(dispatch=DispatchStatus.FAILED, reason=resolved,
                                          error=_AGENT_ERRORS.get(resolved, resolved))
                    await self._report(input, config)
                    return record
                agent = resolved
                self._update(agent=agent["agent"])
            preflight = await self._preflight(input, agent)
            if not preflight.ok:
                record = self._update(
                    dispatch=DispatchStatus.PREFLIGHT_FAILED,
                    error=preflight.error,
                    toolkit=preflight.toolkit,
                    connect_url=preflight.connect_url,
                )
                await self._report(input, config)
                if workflow.patched(WEBHOOKS_PATCH):
                    await self._send_webhook(input, WebhookEvent.SCHEDULE_FIRE_FAILED)
                return record

            run = definition.run
            task_id = agent_runs.task_id(workflow.uuid4().hex)
            fields: dict[str, Any] = {
                "toolkits": list(run.toolkits), "model": run.model, "max_iterations": run.max_iterations,
                "token_budget": run.token_budget, "approval": run.approval, "budget_usd": run.budget_usd,
                "mcp_servers": list(run.mcp_servers),
            }
            if agent is not None:
                fields.update(agent)
            run_input = agent_runs.agent_run_input(
                user_id=input.owner,
                goal=run.goal,
                callback_url=run.callback_url,
                request_id=info.workflow_id,
                schedule_name=definition.name,
                schedule_monthly_budget_usd=run.monthly_budget_usd,
                webhook_events=(
                    None if run.webhook_events is None else [e for e in run.webhook_events if e.is_run_event]
                ),
                **fields,
            )
            child = await workflow.start_child_workflow(
                names.AGENT_WORKFLOW,
                run_input,
                id=task_id,
                task_queue=input.agent_task_queue,
                result_type=AgentRunResult,
                execution_timeout=timedelta(seconds=run.timeout_seconds) if run.timeout_seconds else None,
                task_timeout=agent_runs.RUN_TASK_TIMEOUT,  # as a dispatched run's (recovery)
                # Fair sharing by owner, as a dispatched run (per-user weights are the gateway's).
                priority=agent_runs.run_priority(input.owner),
                # The run shows up in the owner's GET /tasks like a dispatched one.
                search_attributes=agent_runs.owner_search_attributes(input.owner),
                memo=agent_runs.run_memo(run_input, schedule=definition.name),
                # Our cancellation (Replace, or an operator) cancels the run and waits for it to
                # stop, so the record says how it ended.
                cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
            )
            self._update(task_id=task_id)
            await self._report(input, config)
            try:
                result = await child
            except ChildWorkflowError as error:
                self._update(outcome=_outcome_of_error(error), error=_describe_error(error), ended_at=workflow.now())
            else:
                self._update(
                    outcome=_outcome_of(result.status),
                    run_status=result.status,
                    usage=result.usage,
                    error=result.error.message if result.error else None,
                    ended_at=workflow.now(),
                )
            await self._report(input, config)
            assert self._record is not None
            return self._record
        except (asyncio.CancelledError, CancelledError):
            # Replace (CANCEL_OTHER) or a cancel request. The child got the cancellation with us and,
            # awaited, has stopped already; record it, then end as cancelled so Temporal starts the
            # replacing fire.
            if child is not None and not child.done():
                child.cancel()
                try:
                    await child
                except (ChildWorkflowError, asyncio.CancelledError, CancelledError):
                    pass
            if self._record is not None and self._record.outcome is None:
                self._update(
                    outcome=FireOutcome.CANCELLED,
                    error="Cancelled (replaced by a newer fire)" if child else "Cancelled before the run started",
                    ended_at=workflow.now(),
                )
                await self._report(input, config)
            raise

    async def _send_webhook(self, input: ScheduledFireInput, event: WebhookEvent) -> None:
        """Hand the fire's event to a WebhookDelivery workflow on the agent task queue (the agent
        worker holds the signing keys), abandoned: it outlives this fire and retries on its own."""
        run, info = input.definition.run, workflow.info()
        if not run.callback_url or not chosen(run.webhook_events, event, schedule=True):
            return
        assert self._record is not None
        message = webhook_message(
            info.workflow_id, event, url=run.callback_url, timestamp=workflow.now(),
            data={"schedule": input.definition.name, "fire": self._record.model_dump(mode="json")}, final=True,
        )
        await _start_delivery(message, delivery_workflow_id(info.workflow_id), input.agent_task_queue)

    def _update(self, **fields: object) -> FireRecord:
        assert self._record is not None
        self._record = self._record.model_copy(update=fields)
        return self._record

    async def _resolve_agent(self, input: ScheduledFireInput) -> dict[str, Any] | str:
        """The run fields of the schedule's agent (resolved now: no version, the latest), or why
        there is no run: agent_not_found, agent_limits (the schedule loosens the agent's limits),
        agent_unavailable (the registry did not answer)."""
        workflow.patched(AGENT_REF_PATCH)  # only fires of schedules naming an agent come here
        run = input.definition.run
        assert run.agent_ref is not None
        try:
            resolved = await workflow.execute_activity_method(
                SchedulerActivities.resolve_agent,
                ResolveAgentInput(owner=input.owner, ref=run.agent_ref),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=PREFLIGHT_RETRY,
            )
        except ActivityError:
            return "agent_unavailable"
        if resolved.ref is None or resolved.spec is None:
            return "agent_not_found"
        overrides = AgentOverrides(
            toolkits=list(run.toolkits) or None, model=run.model, max_iterations=run.max_iterations,
            token_budget=run.token_budget, budget_usd=run.budget_usd,
            approval_required=list(run.approval.require_for) if run.approval else [],
            approval_timeout_seconds=run.approval.timeout_seconds if run.approval else None,
        )
        fields, errors = apply_agent(resolved.ref, resolved.spec, overrides)
        return "agent_limits" if errors else fields

    async def _preflight(self, input: ScheduledFireInput, agent: dict[str, Any] | None) -> PreflightResult:
        """Toolkit connections, then MCP servers, of what this fire will run (the agent's, if any)."""
        run = input.definition.run
        toolkits = await self._preflight_toolkits(input, agent["toolkits"] if agent is not None else list(run.toolkits))
        servers = list(agent.get("mcp_servers", run.mcp_servers) if agent is not None else run.mcp_servers)
        if not toolkits.ok or not servers or not workflow.patched(MCP_TOOLS_PATCH):
            return toolkits
        try:
            return await workflow.execute_activity_method(
                SchedulerActivities.check_mcp_servers,
                McpPreflightInput(servers=servers),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=PREFLIGHT_RETRY,
            )
        except ActivityError:
            return PreflightResult(ok=False, error="Could not check the MCP servers")

    async def _preflight_toolkits(self, input: ScheduledFireInput, toolkits: list[str]) -> PreflightResult:
        if not toolkits:
            return PreflightResult(ok=True)
        try:
            return await workflow.execute_activity_method(
                SchedulerActivities.check_toolkits,
                PreflightInput(user_id=input.owner, toolkits=toolkits),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=PREFLIGHT_RETRY,
            )
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                return PreflightResult(ok=False, toolkit=None, error=cause.message)
            return PreflightResult(ok=False, error="Could not check toolkit connections (Composio unavailable)")

    async def _report(self, input: ScheduledFireInput, config: LedgerConfig) -> None:
        assert self._record is not None
        await workflow.execute_activity_method(
            SchedulerActivities.record_fire,
            RecordFireInput(
                schedule_id=input.schedule_id,
                scheduler_task_queue=input.scheduler_task_queue,
                record=self._record,
                config=config,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RECORD_RETRY,
        )


async def _start_delivery(message: WebhookMessage, workflow_id: str, agent_task_queue: str) -> None:
    """Hand a webhook to a WebhookDelivery workflow on the agent task queue (the agent worker holds
    the signing keys), abandoned: it outlives the starter and retries on its own."""
    try:
        await workflow.start_child_workflow(
            WEBHOOK_DELIVERY_WORKFLOW,
            message,
            id=workflow_id,
            task_queue=agent_task_queue,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )
    except WorkflowAlreadyStartedError:
        pass  # started by an earlier attempt (a retried workflow task)


def _outcome_of(status: RunStatus) -> FireOutcome:
    if status is RunStatus.COMPLETED:
        return FireOutcome.SUCCEEDED
    if status is RunStatus.CANCELLED:
        return FireOutcome.CANCELLED
    return FireOutcome.FAILED  # failed, max_iterations, budget_exceeded (run_status tells which)


def _outcome_of_error(error: ChildWorkflowError) -> FireOutcome:
    if isinstance(error.cause, TemporalTimeoutError):
        return FireOutcome.TIMED_OUT
    if isinstance(error.cause, CancelledError):
        return FireOutcome.CANCELLED
    return FireOutcome.FAILED


def _describe_error(error: ChildWorkflowError) -> str:
    cause = error.cause
    if isinstance(cause, TemporalTimeoutError):
        return "The run exceeded the schedule's timeout"
    if isinstance(cause, CancelledError):
        return "The run was cancelled"
    if isinstance(cause, TerminatedError):
        return "The run was terminated by an operator"
    return "The run failed unexpectedly"


@workflow.defn(name=SCHEDULE_LEDGER_WORKFLOW)
class ScheduleLedgerWorkflow:
    @workflow.init
    def __init__(self, input: LedgerInput) -> None:
        # Runs before any signal that came with the start (signal-with-start) is handled.
        self._state = input.state.model_copy(deep=True)
        self._config = input.config
        self._observe_due = self._state.skips_seen is None  # take a baseline first thing
        self._events = 0
        self._new_skips: list[FireRecord] = []  # recorded by the last observation

    @workflow.run
    async def run(self, input: LedgerInput) -> None:
        while True:
            try:
                await workflow.wait_condition(lambda: self._observe_due, timeout=self._poll_interval(input))
            except TimeoutError:
                pass
            self._observe_due = False
            observed = await workflow.execute_activity_method(
                SchedulerActivities.observe_schedule,
                ObserveInput(
                    schedule_id=input.schedule_id,
                    skips_seen=self._state.skips_seen,
                    since=self._state.observed_until,
                    known_times=[r.scheduled_at for r in self._state.records if r.scheduled_at is not None],
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=OBSERVE_RETRY,
            )
            if not observed.exists:
                return  # the schedule was deleted: so is its history
            self._apply_observation(input.schedule_id, observed)
            if self._new_skips and workflow.patched(WEBHOOKS_PATCH):
                for skip in self._new_skips:
                    await self._send_skip_webhook(input.schedule_id, skip)
            self._new_skips = []
            self._events += 1
            if self._events >= EVENTS_PER_LEDGER_RUN or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    input.model_copy(update={"config": self._config, "state": self._state})
                )

    @workflow.signal(name=SIGNAL_LEDGER_RECORD)
    def record_fire(self, signal: RecordFire) -> None:
        self._config = signal.config
        self._upsert(signal.record)
        self._events += 1
        if self._config.watch_skips:
            self._observe_due = True

    @workflow.signal(name=SIGNAL_LEDGER_CONFIGURE)
    def configure(self, config: LedgerConfig) -> None:
        self._config = config.model_copy(
            update={"agent_task_queue": config.agent_task_queue or self._config.agent_task_queue}
        )
        self._trim()

    @workflow.query(name=QUERY_LEDGER_HISTORY)
    def history(self) -> RunHistory:
        return RunHistory(
            records=list(self._state.records),
            max_run_history=self._config.max_run_history,
            skips_total=self._state.skip_ordinal,
        )

    def _poll_interval(self, input: LedgerInput) -> timedelta | None:
        # Temporal skips fires only under Forbid, and only while a run goes on.
        running = any(r.active for r in self._state.records)
        if self._config.watch_skips and running:
            return timedelta(seconds=input.observe_interval_seconds)
        return None

    def _upsert(self, record: FireRecord) -> None:
        records = self._state.records
        for index, existing in enumerate(records):
            if (existing.fire_id, existing.fire_run_id) == (record.fire_id, record.fire_run_id):
                if existing.outcome is not None and record.outcome is None:
                    return  # a late copy of an earlier stage
                records[index] = record
                break
        else:
            records.append(record)
        self._trim()

    def _apply_observation(self, schedule_id: str, observed: ObserveResult) -> None:
        state = self._state
        total = observed.skipped_total
        if state.skips_seen is None or total < state.skips_seen:
            # First look (or the schedule was recreated and its count restarted): a baseline.
            state.skips_seen, state.observed_until = total, observed.observed_at
            return
        new = total - state.skips_seen
        if new > 0:
            # The latest candidate times are the likeliest skips; a skipped "trigger now" has no
            # nominal time of its own.
            candidates: list[datetime | None] = list(observed.candidate_times[-new:])
            times = [None] * (new - len(candidates)) + candidates
            for scheduled_at in times:
                state.skip_ordinal += 1
                self._new_skips.append(
                    FireRecord(
                        fire_id=f"{schedule_id}-skip-{state.skip_ordinal}",
                        trigger=FireTrigger.SCHEDULE,
                        scheduled_at=scheduled_at,
                        fired_at=observed.observed_at,
                        dispatch=DispatchStatus.SKIPPED_OVERLAP,
                        error="The previous run was still going (concurrency policy Forbid)",
                    )
                )
                self._upsert(self._new_skips[-1])
        state.skips_seen, state.observed_until = total, observed.observed_at

    async def _send_skip_webhook(self, schedule_id: str, skip: FireRecord) -> None:
        """schedule.fire_skipped, through a WebhookDelivery on the agent task queue (abandoned)."""
        config, event = self._config, WebhookEvent.SCHEDULE_FIRE_SKIPPED
        if not config.callback_url or not config.agent_task_queue:
            return
        if not chosen(config.webhook_events, event, schedule=True):
            return
        # The skip's ordinal restarts if the schedule is made again under its name: the time too.
        occurrence = skip.scheduled_at.isoformat() if skip.scheduled_at else skip.fired_at.isoformat()
        message = webhook_message(
            skip.fire_id, event, url=config.callback_url, timestamp=workflow.now(),
            data={"schedule_id": schedule_id, "fire": skip.model_dump(mode="json")}, occurrence=occurrence,
            final=True,
        )
        await _start_delivery(message, delivery_workflow_id(skip.fire_id), config.agent_task_queue)

    def _trim(self) -> None:
        """Newest first; every running fire kept, then the newest finished ones up to the limit."""
        ordered = sorted(self._state.records, key=lambda r: r.scheduled_at or r.fired_at, reverse=True)
        running = sum(1 for r in ordered if r.active)
        kept: list[FireRecord] = []
        finished_slots = max(0, self._config.max_run_history - running)
        for record in ordered:
            if record.active:
                kept.append(record)
            elif finished_slots > 0:
                kept.append(record)
                finished_slots -= 1
        self._state.records = kept
