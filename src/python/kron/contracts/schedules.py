"""Scheduled agent runs: names, definitions, fire records and the validation every writer applies.

Shared by the gateway (REST), the scheduler deployable (declarative sync, fire workflows) and
`kron.common.schedules` (the Temporal calls both make). Pure: pydantic and the standard library.

A schedule is a Temporal Schedule whose action starts `ScheduledFireWorkflow` on the scheduler's
own task queue; that workflow re-runs the toolkit preflight and then runs `AgentWorkflow` as a
child. `ScheduleLedgerWorkflow` (one per schedule) keeps the run history.
"""

from __future__ import annotations

import itertools
import re
import zoneinfo
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from kron.contracts.mcp import McpServers
from kron.contracts.models import (
    DNS_LABEL_PATTERN,
    AgentRef,
    ApprovalPolicy,
    RunStatus,
    StrictBudgetUsd,
    Usage,
)
from kron.contracts.webhooks import ScheduleWebhookEvents, WebhookEvent

# --- names

SCHEDULED_FIRE_WORKFLOW: Final = "ScheduledFireWorkflow"
SCHEDULE_LEDGER_WORKFLOW: Final = "ScheduleLedgerWorkflow"
SCHEDULER_TASK_QUEUE: Final = "kron-scheduler"

# Signals, queries and updates understood by ScheduleLedgerWorkflow.
SIGNAL_LEDGER_RECORD: Final = "record_fire"
SIGNAL_LEDGER_CONFIGURE: Final = "configure"
QUERY_LEDGER_HISTORY: Final = "history"

# Every kron schedule id starts with this (lets listings skip schedules kron did not make).
SCHEDULE_ID_PREFIX: Final = "kron-sched-"
# Temporal sets this on every workflow a schedule starts: the nominal (pre-jitter) fire time.
SCHEDULED_START_TIME_ATTRIBUTE: Final = "TemporalScheduledStartTime"

# Where a schedule's definition lives. API schedules are changed through the API only; declarative
# ones only through their source (a ScheduledRun resource or the local YAML file).
SOURCE_API: Final = "api"

# A schedule name: a DNS label, like a Kubernetes object name, so one name works in both worlds.
NAME_PATTERN: Final = DNS_LABEL_PATTERN
ScheduleName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ToolkitSlug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]

MAX_CRON_EXPRESSIONS: Final = 10
MAX_JITTER_SECONDS: Final = 3600
DEFAULT_MAX_RUN_HISTORY: Final = 10


class ConcurrencyPolicy(StrEnum):
    """What a fire does while the schedule's previous run is still going (Kubernetes CronJob
    words). The Temporal overlap policy each maps to is in `kron.common.schedules.OVERLAP_POLICY`."""

    ALLOW = "Allow"  # start another run alongside
    FORBID = "Forbid"  # skip this fire (recorded as skipped_overlap)
    REPLACE = "Replace"  # cancel the running one, then start


class DispatchStatus(StrEnum):
    """First stage of a fire: did it start a run?"""

    STARTED = "started"
    SKIPPED_OVERLAP = "skipped_overlap"
    PREFLIGHT_FAILED = "preflight_failed"
    FAILED = "failed"  # no run could be made (`reason`, e.g. agent_not_found)


class FireOutcome(StrEnum):
    """Second stage, for fires that started a run: how the run ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class FireTrigger(StrEnum):
    SCHEDULE = "schedule"  # the spec, or a trigger through the Temporal schedule
    MANUAL = "manual"  # "trigger now" under Allow, started directly (see common.schedules)


# --- cron


class CronError(ValueError):
    pass


_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS: Final = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_WEEKDAYS: Final = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
# (name, lowest, highest, names)
_FIELDS: Final[tuple[tuple[str, int, int, dict[str, int]], ...]] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),  # 0 and 7 are both Sunday
)
_STEP = re.compile(r"^(?P<range>[^/]+)(?:/(?P<step>[0-9]+))?$")


def parse_cron(expression: str) -> list[set[int]]:
    """The values each of the five fields matches; raises CronError saying what is wrong.

    Standard five-field cron (minute hour day-of-month month day-of-week) with `*`, lists, ranges,
    steps, month and weekday names, and the @hourly/@daily/@weekly/@monthly/@yearly macros: the
    subset Temporal's parser and every cron user agree on. Seconds, years, `?`, `L`, `#`, `@every`
    and `CRON_TZ=` are rejected (timezone and intervals have their own fields).
    """
    text = expression.strip()
    if not text:
        raise CronError("empty cron expression")
    if text.startswith("@"):
        if text.lower().startswith("@every"):
            raise CronError("@every is not supported here: use interval_seconds")
        if text.lower() not in _MACROS:
            raise CronError(f"unknown macro {text!r} (known: {', '.join(sorted(_MACROS))})")
        text = _MACROS[text.lower()]
    if text.upper().startswith(("CRON_TZ=", "TZ=")):
        raise CronError("set the timezone in the timezone field, not in the expression")
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    fields = [_parse_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    if 7 in fields[4]:
        fields[4] = (fields[4] - {7}) | {0}
    return fields


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _STEP.match(item)
        if match is None:
            raise CronError(f"{name}: cannot parse {item!r}")
        step_text = match["step"]
        step = int(step_text) if step_text is not None else 1
        if step < 1:
            raise CronError(f"{name}: step must be at least 1")
        span = match["range"]
        if span == "?":
            raise CronError(f"{name}: '?' is not supported; use '*'")
        if span == "*":
            start, end = low, high if name != "day of week" else 6
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = _value(first, name, low, high, names), _value(last, name, low, high, names)
            if start > end:
                raise CronError(f"{name}: range {span!r} goes backwards")
        else:
            start = _value(span, name, low, high, names)
            end = high if step_text is not None else start  # "5/15" means 5, 20, 35, 50
        values.update(range(start, end + 1, step))
    return values


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number" + (" or a name" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name}: {value} is out of range {low}-{high}")
    return value


def cron_min_gap_seconds(expression: str) -> int:
    """The shortest time between two fires of a valid expression, from its minutes and hours.

    Day restrictions only lengthen gaps, so this is exact or conservative (DST aside)."""
    minutes, hours = parse_cron(expression)[:2]
    points = sorted(h * 60 + m for h in hours for m in minutes)
    gaps = [b - a for a, b in itertools.pairwise(points)]
    gaps.append(24 * 60 - points[-1] + points[0])  # from the last fire of a day to the next day's first
    return min(gaps) * 60


def validate_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name such as Europe/Paris)") from None
    return name


# --- definitions


class ScheduleTiming(BaseModel):
    """When a schedule fires: cron expressions in a timezone, or a fixed interval.

    Numbers and booleans in definitions are strict (here, `RunTemplate`, `ScheduleDefinition`):
    `"60"` or `true` for a number is refused, not coerced."""

    model_config = ConfigDict(extra="forbid")

    cron: list[str] = Field(
        default_factory=list,
        max_length=MAX_CRON_EXPRESSIONS,
        description="Five-field cron expressions (or @daily etc.); fires at each match of any.",
    )
    timezone: str = Field(default="UTC", max_length=64, description="IANA timezone the cron is read in.")
    interval_seconds: StrictInt | None = Field(
        default=None, ge=1, le=366 * 24 * 3600, description="Fire every this many seconds (instead of cron)."
    )
    jitter_seconds: StrictInt = Field(
        default=0, ge=0, le=MAX_JITTER_SECONDS, description="Delay each fire by a random time up to this."
    )
    start_at: AwareDatetime | None = Field(default=None, description="No fires before this time.")
    end_at: AwareDatetime | None = Field(default=None, description="No fires after this time.")

    @field_validator("start_at", "end_at")
    @classmethod
    def _representable_in_utc(cls, value: datetime | None) -> datetime | None:
        # 0001-01-01T00:00+23:59 is a valid aware datetime whose UTC instant is before year 1:
        # Temporal (and Python) cannot convert it, so it is refused here, not by an OverflowError.
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("out of range: must be between years 1 and 9999 in UTC") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> ScheduleTiming:
        if bool(self.cron) == (self.interval_seconds is not None):
            raise ValueError("give either cron or interval_seconds (exactly one)")
        for index, expression in enumerate(self.cron):
            try:
                parse_cron(expression)
            except CronError as error:
                raise ValueError(f"cron[{index}] {expression!r}: {error}") from None
        validate_timezone(self.timezone)
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        return self

    def min_gap_seconds(self) -> int:
        if self.interval_seconds is not None:
            return self.interval_seconds
        return min(cron_min_gap_seconds(expression) for expression in self.cron)


class RunTemplate(BaseModel):
    """What each fire runs: the `AgentRunInput` fields a schedule fixes."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(min_length=1, max_length=32_000)
    agent_ref: AgentRef | None = Field(
        default=None,
        description="Run this agent definition (no version: the latest at each fire). Fields set "
        "here override the agent's where allowed (limits only tighten).",
    )
    toolkits: list[ToolkitSlug] = Field(default_factory=list, max_length=32)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    max_iterations: StrictInt | None = Field(default=None, ge=1, le=1000)
    token_budget: StrictInt | None = Field(default=None, ge=1, le=10**12)
    budget_usd: StrictBudgetUsd | None = Field(default=None, description="USD each fire may spend.")
    monthly_budget_usd: StrictBudgetUsd | None = Field(
        default=None, description="USD all fires together may spend per calendar month (UTC)."
    )
    callback_url: str | None = Field(default=None, max_length=2048)
    approval: ApprovalPolicy | None = Field(default=None, description="Tool calls that wait for a human.")
    timeout_seconds: StrictInt | None = Field(
        default=None, ge=60, le=7 * 24 * 3600, description="A run still going after this is timed_out."
    )
    mcp_servers: McpServers = Field(
        default_factory=list, description="MCP servers whose tools each fire's run may call (checked at every fire)."
    )
    webhook_events: ScheduleWebhookEvents | None = Field(
        default=None,
        description="Webhook event types sent to `callback_url`: each fire's run's (`run.*`) and the "
        "fire's own (`schedule.fire_failed`: its toolkit preflight failed). Default: the terminal run "
        "events and `schedule.fire_failed`.",
    )

    @field_validator("toolkits")
    @classmethod
    def _normalise_toolkits(cls, toolkits: list[str]) -> list[str]:
        return list(dict.fromkeys(t.lower() for t in toolkits))  # deduplicated, order kept


class ScheduleDefinition(BaseModel):
    """Everything a schedule's owner decides. The owner itself is not here: it comes from the
    verified token (API) or the resource's `spec.user` (declarative)."""

    model_config = ConfigDict(extra="forbid")

    name: ScheduleName
    timing: ScheduleTiming
    run: RunTemplate
    suspend: StrictBool = False
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    max_run_history: StrictInt = Field(default=DEFAULT_MAX_RUN_HISTORY, ge=1, le=1000)


class ScheduleLimits(BaseModel):
    """Bounds that depend on deployment settings, checked on top of the model's own."""

    min_interval_seconds: int = 60
    max_run_history: int = 100


def limit_errors(
    definition: ScheduleDefinition, limits: ScheduleLimits, now: datetime, loc: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Violations as FastAPI-style error dicts (`loc`, `msg`, `type`); empty when none."""
    errors: list[dict[str, Any]] = []
    timing = definition.timing
    gap = timing.min_gap_seconds()
    if gap < limits.min_interval_seconds:
        field = "interval_seconds" if timing.interval_seconds is not None else "cron"
        errors.append({
            "loc": [*loc, "timing", field],
            "msg": f"fires every {gap} s at the shortest; the minimum is {limits.min_interval_seconds} s",
            "type": "interval_too_short",
        })
    if definition.max_run_history > limits.max_run_history:
        errors.append({
            "loc": [*loc, "max_run_history"],
            "msg": f"must be at most {limits.max_run_history}",
            "type": "less_than_equal",
        })
    if timing.end_at is not None and timing.end_at <= now:
        errors.append({"loc": [*loc, "timing", "end_at"], "msg": "end_at is in the past", "type": "past"})
    return errors


# --- workflow inputs and records


class ScheduledFireInput(BaseModel):
    """Input of `ScheduledFireWorkflow`, stored as the Temporal schedule's action argument. It is
    also the canonical copy of the definition (Temporal keeps cron only in a normalised form)."""

    schedule_id: str
    owner: str = Field(min_length=1, max_length=256)
    source: str = SOURCE_API
    definition: ScheduleDefinition  # `suspend` lives in the schedule's state, always False here
    agent_task_queue: str
    scheduler_task_queue: str
    trigger: FireTrigger = FireTrigger.SCHEDULE


class FireRecord(BaseModel):
    """One fire of a schedule, in its run history."""

    fire_id: str  # the fire workflow's id; for skips, "<schedule id>-skip-<n>"
    # Temporal reuses a fire's workflow id when Replace starts the next fire in the same second.
    fire_run_id: str | None = None
    trigger: FireTrigger = FireTrigger.SCHEDULE
    scheduled_at: datetime | None = None  # nominal fire time (None: a skipped manual trigger)
    fired_at: datetime  # when the fire was handled (or the skip observed)
    dispatch: DispatchStatus
    task_id: str | None = None  # the agent run (GET /tasks/{task_id})
    outcome: FireOutcome | None = None  # None while the run goes on, or when nothing started
    run_status: RunStatus | None = None  # the run's own status (completed, max_iterations, ...)
    ended_at: datetime | None = None
    usage: Usage | None = None
    error: str | None = None
    toolkit: str | None = None  # preflight_failed: the toolkit to connect ...
    connect_url: str | None = None  # ... and where
    reason: str | None = None  # dispatch failed: why, as a code (agent_not_found, agent_limits, ...)
    agent: AgentRef | None = None  # the agent definition (name, version) this fire ran

    @property
    def active(self) -> bool:
        return self.dispatch is DispatchStatus.STARTED and self.outcome is None


class LedgerConfig(BaseModel):
    max_run_history: int = Field(default=DEFAULT_MAX_RUN_HISTORY, ge=1)
    # Forbid is the only policy under which Temporal skips fires: only then is polling for skips
    # worth it while a run goes on.
    watch_skips: bool = True
    # Where and which webhooks the schedule sends (schedule.fire_skipped comes from the ledger), and
    # the agent task queue whose worker delivers them (known to fires; a configure keeps the last).
    callback_url: str | None = None
    webhook_events: list[WebhookEvent] | None = None
    agent_task_queue: str | None = None


class LedgerState(BaseModel):
    """What `ScheduleLedgerWorkflow` carries across continue-as-new."""

    records: list[FireRecord] = Field(default_factory=list)  # newest first
    # Temporal's count of overlap skips already turned into records; None: not known yet (the first
    # observation takes the count as it finds it).
    skips_seen: int | None = None
    observed_until: datetime | None = None
    skip_ordinal: int = 0


class LedgerInput(BaseModel):
    schedule_id: str
    config: LedgerConfig = Field(default_factory=LedgerConfig)
    observe_interval_seconds: float = Field(default=15.0, gt=0)
    state: LedgerState = Field(default_factory=LedgerState)


class RecordFire(BaseModel):
    """Signal to the ledger: a fire's record, new or updated (upserted by `fire_id`)."""

    record: FireRecord
    config: LedgerConfig


class RunHistory(BaseModel):
    """Answer of the ledger's `history` query."""

    records: list[FireRecord]
    max_run_history: int
    skips_total: int = 0
