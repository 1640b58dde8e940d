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
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from kron.common import agent_runs
    from kron.contracts import names
    from kron.contracts.models import AgentRunResult, RunStatus
    from kron.contracts.schedules import (
        QUERY_LEDGER_HISTORY,
        SCHEDULE_LEDGER_WORKFLOW,
        SCHEDULED_FIRE_WORKFLOW,
        SCHEDULED_START_TIME_ATTRIBUTE,
        SIGNAL_LEDGER_CONFIGURE,
        SIGNAL_LEDGER_RECORD,
        ConcurrencyPolicy,
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
    from kron.scheduler.activities import (
        ObserveInput,
        ObserveResult,
        PreflightInput,
        PreflightResult,
        RecordFireInput,
        SchedulerActivities,
    )

SCHEDULED_START_TIME = SearchAttributeKey.for_datetime(SCHEDULED_START_TIME_ATTRIBUTE)

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
# A ledger continues as new after this many fire records and observations (each costs a handful of
# history events), keeping its history well under Temporal's limits however long a run polls.
EVENTS_PER_LEDGER_RUN = 200


@workflow.defn(name=SCHEDULED_FIRE_WORKFLOW)
class ScheduledFireWorkflow:
    def __init__(self) -> None:
        self._record: FireRecord | None = None

    @workflow.run
    async def run(self, input: ScheduledFireInput) -> FireRecord:
        info = workflow.info()
        definition = input.definition
        config = LedgerConfig(
            max_run_history=definition.max_run_history,
            watch_skips=definition.concurrency_policy is ConcurrencyPolicy.FORBID,
        )
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
            preflight = await self._preflight(input)
            if not preflight.ok:
                record = self._update(
                    dispatch=DispatchStatus.PREFLIGHT_FAILED,
                    error=preflight.error,
                    toolkit=preflight.toolkit,
                    connect_url=preflight.connect_url,
                )
                await self._report(input, config)
                return record

            run = definition.run
            task_id = agent_runs.task_id(workflow.uuid4().hex)
            run_input = agent_runs.agent_run_input(
                user_id=input.owner,
                goal=run.goal,
                toolkits=list(run.toolkits),
                model=run.model,
                max_iterations=run.max_iterations,
                token_budget=run.token_budget,
                callback_url=run.callback_url,
                approval=run.approval,
                request_id=info.workflow_id,
                budget_usd=run.budget_usd,
                schedule_name=definition.name,
                schedule_monthly_budget_usd=run.monthly_budget_usd,
            )
            child = await workflow.start_child_workflow(
                names.AGENT_WORKFLOW,
                run_input,
                id=task_id,
                task_queue=input.agent_task_queue,
                result_type=AgentRunResult,
                execution_timeout=timedelta(seconds=run.timeout_seconds) if run.timeout_seconds else None,
                task_timeout=agent_runs.RUN_TASK_TIMEOUT,  # as a dispatched run's (recovery)
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

    def _update(self, **fields: object) -> FireRecord:
        assert self._record is not None
        self._record = self._record.model_copy(update=fields)
        return self._record

    async def _preflight(self, input: ScheduledFireInput) -> PreflightResult:
        toolkits = list(input.definition.run.toolkits)
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
        self._config = config
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
                self._upsert(
                    FireRecord(
                        fire_id=f"{schedule_id}-skip-{state.skip_ordinal}",
                        trigger=FireTrigger.SCHEDULE,
                        scheduled_at=scheduled_at,
                        fired_at=observed.observed_at,
                        dispatch=DispatchStatus.SKIPPED_OVERLAP,
                        error="The previous run was still going (concurrency policy Forbid)",
                    )
                )
        state.skips_seen, state.observed_until = total, observed.observed_at

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
