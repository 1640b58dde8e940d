"""Scheduled runs on Temporal Schedules: the calls the gateway (REST) and the scheduler's declarative
sync both make. Here, not in either deployable, because both need the same ids, the same Temporal
schedule for a definition and the same idempotent apply.

Concurrency policies map to Temporal overlap policies (`OVERLAP_POLICY`):

    Allow   -> ALLOW_ALL     every fire starts a run
    Forbid  -> SKIP          a fire while the previous run goes on is skipped (and recorded)
    Replace -> CANCEL_OTHER  the running fire is cancelled (its run is cancelled and records
                             `cancelled`), then the new fire starts

The schedule's action is `ScheduledFireWorkflow`, which lives as long as its agent run, so Temporal
applies the overlap policy to the whole run. Temporal names the workflows a schedule starts
`<schedule id>-<time to the second>`: under ALLOW_ALL a second start in the same second collides and
is dropped. Spec fires are at least a minimum interval apart, so only "trigger now" can collide;
under Allow it therefore starts the fire workflow directly with a unique id (the same thing the
schedule would do, minus the collision). Under Forbid and Replace it goes through the schedule, which
applies the policy (skip, or cancel then start); once the earlier fire has closed, Temporal reuses
its workflow id for a fire in the same second, so fire records are keyed by workflow id and run id.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleListDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from kron.common.agent_runs import owner_clause, owner_search_attributes
from kron.contracts import names
from kron.contracts.schedules import (
    QUERY_LEDGER_HISTORY,
    SCHEDULE_ID_PREFIX,
    SCHEDULE_LEDGER_WORKFLOW,
    SCHEDULED_FIRE_WORKFLOW,
    SCHEDULER_TASK_QUEUE,
    SIGNAL_LEDGER_CONFIGURE,
    SOURCE_API,
    ConcurrencyPolicy,
    FireTrigger,
    LedgerConfig,
    LedgerInput,
    LedgerState,
    RunHistory,
    ScheduleDefinition,
    ScheduledFireInput,
    ScheduleLimits,
    ScheduleTiming,
)

OVERLAP_POLICY: dict[ConcurrencyPolicy, ScheduleOverlapPolicy] = {
    ConcurrencyPolicy.ALLOW: ScheduleOverlapPolicy.ALLOW_ALL,
    ConcurrencyPolicy.FORBID: ScheduleOverlapPolicy.SKIP,
    ConcurrencyPolicy.REPLACE: ScheduleOverlapPolicy.CANCEL_OTHER,
}
NEXT_RUN_TIMES_SHOWN = 5


class ScheduleSettings(BaseSettings):
    """Settings the gateway and the scheduler must agree on (same `KRON_*` variables for both)."""

    model_config = SettingsConfigDict(env_prefix="KRON_", extra="ignore", env_ignore_empty=True)

    scheduler_task_queue: str = SCHEDULER_TASK_QUEUE
    schedule_min_interval_seconds: int = Field(default=60, ge=1)
    schedule_max_run_history: int = Field(default=100, ge=1, le=1000)
    schedule_max_per_user: int = Field(default=100, ge=1)
    # A ledger polls Temporal for overlap skips this often while a Forbid run goes on.
    schedule_observe_interval_seconds: float = Field(default=15.0, gt=0)
    # After a Temporal outage, fires missed within this window still happen (at most one under
    # Forbid); older ones are dropped rather than started all at once.
    schedule_catchup_window_seconds: int = Field(default=600, ge=10)

    @property
    def limits(self) -> ScheduleLimits:
        return ScheduleLimits(
            min_interval_seconds=self.schedule_min_interval_seconds,
            max_run_history=self.schedule_max_run_history,
        )


# --- errors


class ScheduleNotFound(Exception):
    pass


class ScheduleExists(Exception):
    pass


class ScheduleManagedElsewhere(Exception):
    """The schedule belongs to another source (API vs a declarative source): not ours to change."""

    def __init__(self, source: str) -> None:
        super().__init__(f"managed by {source}")
        self.source = source


class ScheduleRejected(Exception):
    """Temporal refused the schedule (INVALID_ARGUMENT): our validation let something through."""


class SchedulerUnavailable(Exception):
    """Nothing answered for the scheduler (its worker is down): run history cannot be read."""


# --- ids


def schedule_id(owner: str, name: str) -> str:
    """Names are unique per owner; the hash keeps different owners' ids apart."""
    digest = hashlib.sha256(f"{len(owner)}:{owner}:{name}".encode()).hexdigest()[:16]
    return f"{SCHEDULE_ID_PREFIX}{name}-{digest}"


def ledger_id(schedule: str) -> str:
    return f"{schedule}/ledger"


# --- views


class ScheduleView(BaseModel):
    """A schedule as Temporal has it: the definition plus what only Temporal knows."""

    schedule_id: str
    owner: str
    source: str
    definition: ScheduleDefinition
    next_run_times: list[datetime] = Field(default_factory=list)
    last_run_at: datetime | None = None  # the latest fire that started a workflow
    running_fire_ids: list[str] = Field(default_factory=list)
    fires_total: int = 0  # fires that started a workflow (manual Allow triggers not counted)
    skipped_overlap_total: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    fire_input: ScheduledFireInput = Field(exclude=True)


class ScheduleSummary(BaseModel):
    """A schedule as a listing shows it (no definition: listings do not carry the action input)."""

    schedule_id: str
    name: str
    owner: str
    source: str
    suspended: bool
    next_run_times: list[datetime] = Field(default_factory=list)
    last_run_at: datetime | None = None


# --- building Temporal schedules


def temporal_spec(timing: ScheduleTiming) -> ScheduleSpec:
    return ScheduleSpec(
        cron_expressions=list(timing.cron),
        intervals=(
            [ScheduleIntervalSpec(every=timedelta(seconds=timing.interval_seconds))]
            if timing.interval_seconds is not None
            else []
        ),
        time_zone_name=timing.timezone if timing.cron else None,
        jitter=timedelta(seconds=timing.jitter_seconds) if timing.jitter_seconds else None,
        start_at=timing.start_at,
        end_at=timing.end_at,
    )


def temporal_schedule(fire_input: ScheduledFireInput, *, suspend: bool, catchup_window: timedelta) -> Schedule:
    definition = fire_input.definition
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SCHEDULED_FIRE_WORKFLOW,
            fire_input,
            id=fire_input.schedule_id,
            task_queue=fire_input.scheduler_task_queue,
            typed_search_attributes=owner_search_attributes(fire_input.owner),
        ),
        spec=temporal_spec(definition.timing),
        policy=SchedulePolicy(
            overlap=OVERLAP_POLICY[definition.concurrency_policy], catchup_window=catchup_window
        ),
        state=ScheduleState(paused=suspend, note="suspended" if suspend else None),
    )


class ScheduleStore:
    """Create, read, change and delete kron schedules (and their ledgers) in Temporal."""

    def __init__(
        self,
        client: Client,
        settings: ScheduleSettings,
        *,
        agent_task_queue: str = names.AGENT_TASK_QUEUE,
        rpc_timeout: timedelta = timedelta(seconds=10),
    ) -> None:
        self.client = client
        self.settings = settings
        self.agent_task_queue = agent_task_queue
        self.rpc_timeout = rpc_timeout

    def fire_input(self, owner: str, definition: ScheduleDefinition, source: str) -> ScheduledFireInput:
        return ScheduledFireInput(
            schedule_id=schedule_id(owner, definition.name),
            owner=owner,
            source=source,
            definition=definition.model_copy(update={"suspend": False}),
            agent_task_queue=self.agent_task_queue,
            scheduler_task_queue=self.settings.scheduler_task_queue,
        )

    # --- writes

    async def create(self, owner: str, definition: ScheduleDefinition, source: str = SOURCE_API) -> ScheduleView:
        """Raises ScheduleExists when the owner already has a schedule of that name."""
        fire_input = self.fire_input(owner, definition, source)
        try:
            await self.client.create_schedule(
                fire_input.schedule_id,
                self._schedule(fire_input, definition.suspend),
                memo={"owner": owner, "name": definition.name, "source": source},
                search_attributes=owner_search_attributes(owner),
                rpc_timeout=self.rpc_timeout,
            )
        except ScheduleAlreadyRunningError:
            raise ScheduleExists(definition.name) from None
        except RPCError as error:
            raise _rejected_or(error) from None
        await self._start_ledger(fire_input, skips_seen=0)
        return await self.get(fire_input.schedule_id)

    async def replace(self, view: ScheduleView, definition: ScheduleDefinition) -> ScheduleView:
        """Make the schedule `definition` (name and owner unchanged), including its suspend state."""
        fire_input = self.fire_input(view.owner, definition, view.source)
        schedule = self._schedule(fire_input, definition.suspend)

        def updater(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        try:
            await self.client.get_schedule_handle(view.schedule_id).update(updater, rpc_timeout=self.rpc_timeout)
        except RPCError as error:
            raise _rejected_or(error) from None
        await self._configure_ledger(fire_input)
        return await self.get(view.schedule_id)

    async def apply(self, owner: str, definition: ScheduleDefinition, source: str) -> tuple[str, ScheduleView]:
        """Idempotent create-or-update for a declarative source: ("created" | "updated" |
        "unchanged", view). Raises ScheduleManagedElsewhere when another source owns the name."""
        sid = schedule_id(owner, definition.name)
        try:
            view = await self.get(sid)
        except ScheduleNotFound:
            try:
                return "created", await self.create(owner, definition, source)
            except ScheduleExists:  # another controller got there first: compare with theirs
                view = await self.get(sid)
        if view.source != source or view.owner != owner:
            raise ScheduleManagedElsewhere(view.source)
        if view.definition == definition and view.fire_input == self.fire_input(owner, definition, source):
            return "unchanged", view
        return "updated", await self.replace(view, definition)

    async def set_suspended(self, view: ScheduleView, suspended: bool) -> ScheduleView:
        handle = self.client.get_schedule_handle(view.schedule_id)
        if suspended:
            await handle.pause(note="suspended", rpc_timeout=self.rpc_timeout)
        else:
            await handle.unpause(note="resumed", rpc_timeout=self.rpc_timeout)
        return await self.get(view.schedule_id)

    async def delete(self, schedule: str) -> None:
        """Delete the schedule and its history. Runs already going finish on their own."""
        try:
            await self.client.get_schedule_handle(schedule).delete(rpc_timeout=self.rpc_timeout)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
        try:
            await self.client.get_workflow_handle(ledger_id(schedule)).terminate(
                "schedule deleted", rpc_timeout=self.rpc_timeout
            )
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise

    async def trigger(self, view: ScheduleView) -> str | None:
        """Fire now, suspended or not, honouring the concurrency policy. Returns the fire's
        workflow id when it is known at once (Allow), else None (Temporal starts it shortly)."""
        if view.definition.concurrency_policy is ConcurrencyPolicy.ALLOW:
            fire_id = f"{view.schedule_id}-manual-{uuid.uuid4().hex[:12]}"
            await self.client.start_workflow(
                SCHEDULED_FIRE_WORKFLOW,
                view.fire_input.model_copy(update={"trigger": FireTrigger.MANUAL}),
                id=fire_id,
                task_queue=view.fire_input.scheduler_task_queue,
                search_attributes=owner_search_attributes(view.owner),
                rpc_timeout=self.rpc_timeout,
            )
            return fire_id
        await self.client.get_schedule_handle(view.schedule_id).trigger(rpc_timeout=self.rpc_timeout)
        return None

    # --- reads

    async def get(self, schedule: str) -> ScheduleView:
        try:
            description = await self.client.get_schedule_handle(schedule).describe(rpc_timeout=self.rpc_timeout)
        except RPCError as error:
            if error.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise ScheduleNotFound(schedule) from None
            raise
        return await self._view(description)

    async def get_owned(self, owner: str, name: str) -> ScheduleView:
        """The owner's schedule of that name; ScheduleNotFound for anyone else's."""
        view = await self.get(schedule_id(owner, name))
        if view.owner != owner or view.definition.name != name:
            raise ScheduleNotFound(name)
        return view

    async def history(self, schedule: str) -> RunHistory:
        handle = self.client.get_workflow_handle(ledger_id(schedule))
        try:
            history: RunHistory = await handle.query(
                QUERY_LEDGER_HISTORY, result_type=RunHistory, rpc_timeout=self.rpc_timeout
            )
            return history
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return RunHistory(records=[], max_run_history=0)
            # No scheduler worker polls (timeout or no pollers), or Temporal itself is down.
            raise SchedulerUnavailable(error.status.name if error.status else "unknown") from None
        except WorkflowQueryFailedError as error:
            raise SchedulerUnavailable(str(error)) from None

    async def list_owned(
        self, owner: str, *, page_size: int, page_token: bytes | None = None
    ) -> tuple[list[ScheduleSummary], bytes | None]:
        query = f"{owner_clause(owner)} AND ScheduleId STARTS_WITH '{SCHEDULE_ID_PREFIX}'"
        pages = await self.client.list_schedules(
            query, page_size=page_size, next_page_token=page_token, rpc_timeout=self.rpc_timeout
        )
        await pages.fetch_next_page()
        summaries = [await _summary(entry) for entry in pages.current_page or []]
        return [s for s in summaries if s.owner == owner], pages.next_page_token

    async def list_by_source(self, source: str) -> list[ScheduleSummary]:
        """Every kron schedule a source manages (the source lives in the memo: a listing filters it)."""
        found: list[ScheduleSummary] = []
        async for entry in await self.client.list_schedules(
            f"ScheduleId STARTS_WITH '{SCHEDULE_ID_PREFIX}'", rpc_timeout=self.rpc_timeout
        ):
            summary = await _summary(entry)
            if summary.source == source:
                found.append(summary)
        return found

    async def count_owned(self, owner: str, up_to: int) -> int:
        summaries, _ = await self.list_owned(owner, page_size=up_to)
        return len(summaries)

    # --- internals

    def _schedule(self, fire_input: ScheduledFireInput, suspend: bool) -> Schedule:
        return temporal_schedule(
            fire_input,
            suspend=suspend,
            catchup_window=timedelta(seconds=self.settings.schedule_catchup_window_seconds),
        )

    def _ledger_input(self, fire_input: ScheduledFireInput, skips_seen: int | None) -> LedgerInput:
        return LedgerInput(
            schedule_id=fire_input.schedule_id,
            config=ledger_config(fire_input.definition),
            observe_interval_seconds=self.settings.schedule_observe_interval_seconds,
            state=LedgerState(skips_seen=skips_seen),
        )

    async def _start_ledger(self, fire_input: ScheduledFireInput, skips_seen: int | None) -> None:
        await self.client.start_workflow(
            SCHEDULE_LEDGER_WORKFLOW,
            self._ledger_input(fire_input, skips_seen),
            id=ledger_id(fire_input.schedule_id),
            task_queue=fire_input.scheduler_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            rpc_timeout=self.rpc_timeout,
        )

    async def _configure_ledger(self, fire_input: ScheduledFireInput) -> None:
        # Signal-with-start: a ledger that is missing (never started, or ended) comes back.
        await self.client.start_workflow(
            SCHEDULE_LEDGER_WORKFLOW,
            self._ledger_input(fire_input, skips_seen=None),
            id=ledger_id(fire_input.schedule_id),
            task_queue=fire_input.scheduler_task_queue,
            start_signal=SIGNAL_LEDGER_CONFIGURE,
            start_signal_args=[ledger_config(fire_input.definition)],
            rpc_timeout=self.rpc_timeout,
        )

    async def _view(self, description: ScheduleDescription) -> ScheduleView:
        action = description.schedule.action
        if not isinstance(action, ScheduleActionStartWorkflow) or action.workflow != SCHEDULED_FIRE_WORKFLOW:
            raise ScheduleNotFound(description.id)  # not a kron schedule
        decoded = await self.client.data_converter.decode(list(action.args), [ScheduledFireInput])
        fire_input: ScheduledFireInput = decoded[0]
        info = description.info
        paused = description.schedule.state.paused
        return ScheduleView(
            schedule_id=description.id,
            owner=fire_input.owner,
            source=fire_input.source,
            definition=fire_input.definition.model_copy(update={"suspend": paused}),
            # Temporal lists the spec's times while paused too; none of them will fire.
            next_run_times=[] if paused else list(info.next_action_times[:NEXT_RUN_TIMES_SHOWN]),
            last_run_at=max((a.scheduled_at for a in info.recent_actions), default=None),
            running_fire_ids=[
                a.workflow_id for a in info.running_actions if isinstance(a, ScheduleActionExecutionStartWorkflow)
            ],
            fires_total=info.num_actions,
            skipped_overlap_total=info.num_actions_skipped_overlap,
            created_at=info.created_at,
            updated_at=info.last_updated_at,
            fire_input=fire_input,
        )


def ledger_config(definition: ScheduleDefinition) -> LedgerConfig:
    return LedgerConfig(
        max_run_history=definition.max_run_history,
        watch_skips=definition.concurrency_policy is ConcurrencyPolicy.FORBID,
        callback_url=definition.run.callback_url,
        webhook_events=definition.run.webhook_events,
    )


async def _summary(entry: ScheduleListDescription) -> ScheduleSummary:
    memo: dict[str, Any] = dict(await entry.memo())
    info, schedule = entry.info, entry.schedule
    recent: Sequence[datetime] = [a.scheduled_at for a in info.recent_actions] if info else []
    suspended = bool(schedule.state.paused) if schedule else False
    return ScheduleSummary(
        schedule_id=entry.id,
        name=str(memo.get("name", "")),
        owner=str(memo.get("owner", "")),
        source=str(memo.get("source", SOURCE_API)),
        suspended=suspended,
        next_run_times=list(info.next_action_times[:NEXT_RUN_TIMES_SHOWN]) if info and not suspended else [],
        last_run_at=max(recent, default=None),
    )


def _rejected_or(error: RPCError) -> Exception:
    if error.status == RPCStatusCode.INVALID_ARGUMENT:
        return ScheduleRejected(error.message)
    return error


def utcnow() -> datetime:
    return datetime.now(UTC)
