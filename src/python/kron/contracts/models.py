"""Workflow input/output and query models shared across deployables.

All models are pydantic v2 and travel through Temporal with the pydantic data converter.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from kron.contracts.mcp import McpServers, McpToolRef
from kron.contracts.webhooks import WebhookEvent

# How long a prompt-cache entry lives after the request that wrote or last read it started.
CacheTTL: TypeAlias = Literal["5m", "1h"]
# Model calls per run when a dispatch or schedule does not say.
DEFAULT_MAX_ITERATIONS = 25


class RunStatus(StrEnum):
    """Lifecycle of one agent run, as reported by the `status` query."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"  # a USD budget is reached: waits for a higher one (or ends budget_exceeded)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MAX_ITERATIONS = "max_iterations"
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def is_terminal(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.PAUSED)


# The most a USD budget may be: beyond it a budget is a typo, not a limit.
MAX_BUDGET_USD = 1_000_000.0
# A positive, finite, sane amount of USD (NaN, inf, 0 and negatives are refused).
BudgetUsd = Annotated[float, Field(gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False)]
# The same in API bodies, where "10" or true is a mistake to refuse, not a number to guess.
StrictBudgetUsd = Annotated[BudgetUsd, Strict()]
# A paused run ends as budget_exceeded when no higher budget comes within this.
DEFAULT_BUDGET_PAUSE_SECONDS = 7 * 24 * 3600
# At this fraction of a run's USD budget the model is told, in its next request, to wrap up.
DEFAULT_BUDGET_SOFT_LIMIT = 0.8


class StepKind(StrEnum):
    MODEL = "model"
    TOOL = "tool"


class Usage(BaseModel):
    """Token and call accounting for one run (accumulated across continue-as-new)."""

    input_tokens: int = 0  # uncached input only (as the API counts it)
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    # USD spent on model calls. None once any call's price was unknown: never counted as 0.
    cost_usd: float | None = 0.0
    model_calls: int = 0
    tool_calls: int = 0

    @property
    def total_tokens(self) -> int:
        """Every token the model processed (what a token budget counts): cached input included, so
        turning prompt caching on does not quietly loosen a run's token budget."""
        return (self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
                + self.output_tokens)


class ToolSafety(StrEnum):
    """What re-running a tool call whose outcome is unknown could do."""

    READ_ONLY = "read_only"  # no effect: retry freely
    IDEMPOTENT = "idempotent"  # same effect however often it runs: retry freely
    UNSAFE = "unsafe"  # may act twice: never re-run blindly after a crash


class StepRecord(BaseModel):
    """One completed step of a run, for the `progress` query."""

    index: int
    kind: StepKind
    turn: int
    name: str  # model name for a model step, tool slug for a tool step
    ok: bool
    error: str | None = None
    duration_seconds: float = 0.0
    # USD of a model step by the worker's price table; None: unknown (or a tool step).
    cost_usd: float | None = None
    # An unsafe tool call that was in flight when its worker died: it may or may not have acted.
    outcome_unknown: bool = False
    # A model step's tokens (0 for tool steps): uncached input, output, and input read from and
    # written to the prompt cache.
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    # The start of what the step produced (the reply's text, the tool's result), when the run keeps
    # its conversation in the transcript store (then the content itself is not in the workflow).
    preview: str | None = None


class RunError(BaseModel):
    """Why a run failed, in words a user can act on. Never carries secrets."""

    code: str  # e.g. "model_bad_request", "model_auth", "refused", "internal"
    message: str
    status_code: int | None = None


class PendingToolCall(BaseModel):
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ContentRef(BaseModel):
    """Conversation content stored once in the run's transcript (kron.common.transcripts), named by
    the sha256 of its bytes. The workflow carries this instead of the content."""

    sha256: str
    chars: int  # length of the stored text: the context guard estimates tokens from it
    preview: str = ""  # its start, for progress and logs


class TranscriptToolResult(BaseModel):
    """One `tool_result` block: the stored result, or a short text kron itself wrote (a refusal,
    a tool failure)."""

    tool_use_id: str
    content: ContentRef | str
    is_error: bool = False


class TranscriptMessage(BaseModel):
    """A message not yet linked into the run's stored chain of messages (see `Transcript`)."""

    role: Literal["user", "assistant"]
    content: ContentRef | str | None = None  # the message's whole content
    tool_results: list[TranscriptToolResult] = Field(default_factory=list)  # or: tool results


# Until call_model reports the model's own context window, the guard assumes this.
DEFAULT_CONTEXT_WINDOW_TOKENS = 200_000


class Transcript(BaseModel):
    """A conversation kept in the transcript store (workflow patch transcripts-v1).

    The store holds each content once and a chain of message nodes, each naming the one before it;
    `head` names the newest stored node. Messages recorded since the last model call are in `tail`
    (they are linked into the chain by the next call). So what the workflow sends per model call is
    a constant size however long the conversation is. Sizes are kept here so the pure loop can keep
    the request within the model's context window without reading any content.
    """

    id: str  # the run's key in the store: its workflow id
    head: str | None = None
    tail: list[TranscriptMessage] = Field(default_factory=list)
    system: ContentRef | str | None = None  # inline until the first model call stores it
    tools: ContentRef | None = None  # the stored tool definitions (Conversation.tools stays inline)
    message_chars: int = 0  # all messages as the model sees them (dropped results as their note)
    tool_result_chars: list[int] = Field(default_factory=list)  # each tool result, oldest first
    last_message_results: int = 0  # tool results in the newest message: never dropped
    dropped_results: int = 0  # the oldest this many tool results are replaced by a short note
    dropped_chars: int = 0
    context_window_tokens: int = DEFAULT_CONTEXT_WINDOW_TOKENS
    pending_calls: list[PendingToolCall] = Field(default_factory=list)  # of the newest reply
    last_text: str = ""  # the newest non-empty reply text (a partial result's output)
    answer: str = ""  # the newest turn's text, joined across max_tokens continuations
    continuing: bool = False  # the next reply continues one cut off at max_tokens


class Conversation(BaseModel):
    """The run's state that continue-as-new carries forward. Opaque to the gateway."""

    messages: list[dict[str, Any]] = Field(default_factory=list)  # before transcripts-v1 only
    transcript: Transcript | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tools_loaded: bool = False
    usage: Usage = Field(default_factory=Usage)
    turns: int = 0
    continuations: int = 0
    steps: list[StepRecord] = Field(default_factory=list)
    tool_safety: dict[str, ToolSafety] = Field(default_factory=dict)  # as classified by the worker
    budget_note_sent: bool = False  # the model was told once that the USD budget is nearly spent
    # mcp-tools-v1: each MCP tool's namespaced name (as the model sees it) -> its server and tool.
    mcp_tools: dict[str, McpToolRef] = Field(default_factory=dict)


class ApprovalPolicy(BaseModel):
    """Tool calls that wait for a human before they run.

    An entry is a toolkit (`github`: every GITHUB_* tool) or a tool slug (`GMAIL_SEND_EMAIL`).
    """

    model_config = ConfigDict(extra="forbid")

    require_for: list[str] = Field(default_factory=list, max_length=64)
    timeout_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)

    def requires(self, tool_slug: str) -> bool:
        slug = tool_slug.upper()
        return any(
            slug == entry.upper() or slug.startswith(entry.upper() + "_") for entry in self.require_for
        )


# --- agent definitions (kron.contracts.agents) as a run carries them

# A DNS label, like a Kubernetes object name: agent and schedule names work in the API and as resources.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_V = TypeVar("_V")
# A toolkit or tool slug as a ToolPolicy key.
ToolKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class AgentRef(BaseModel):
    """Names an agent definition. In a request, no version means the latest; in a run, the version
    the run was resolved to (and `shared`: a declared agent rather than the owner's own)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=DNS_LABEL_PATTERN)
    version: Annotated[int, Strict()] | None = Field(default=None, ge=1)
    shared: bool = False


class ToolPermission(StrEnum):
    ALLOW = "allow"  # the call runs
    ASK = "ask"  # the call waits for a human, as under ApprovalPolicy
    DENY = "deny"  # the call never runs: the model gets a refusal as its result


class ToolPolicy(BaseModel):
    """An agent's rules for tool calls. Keys are toolkits (`github`: every GITHUB_* tool) or tool
    slugs, matched as in ApprovalPolicy; the longest matching key wins, so a tool's own entry beats
    its toolkit's. `safety` overrides how a call is classified for crash recovery, as
    KRON_TOOL_SAFETY does for the whole deployment."""

    model_config = ConfigDict(extra="forbid")

    default: ToolPermission = ToolPermission.ALLOW
    permissions: dict[ToolKey, ToolPermission] = Field(default_factory=dict, max_length=128)
    safety: dict[ToolKey, ToolSafety] = Field(default_factory=dict, max_length=128)

    def permission(self, tool_slug: str) -> ToolPermission:
        return _longest_match(self.permissions, tool_slug) or self.default

    def safety_of(self, tool_slug: str) -> ToolSafety | None:
        return _longest_match(self.safety, tool_slug)


def _longest_match(entries: Mapping[str, _V], tool_slug: str) -> _V | None:
    slug = tool_slug.upper()
    matches = [k for k in entries if slug == k.upper() or slug.startswith(k.upper() + "_")]
    return entries[max(matches, key=len)] if matches else None


class PendingApproval(BaseModel):
    """Tool calls waiting for a decision (the `progress` query shows it while status is waiting)."""

    turn: int
    calls: list[PendingToolCall]
    timeout_seconds: int


class BudgetKind(StrEnum):
    """Which USD budget a paused run reached."""

    RUN = "run"  # the run's own budget_usd (a schedule's per-fire budget is this too)
    USER_MONTH = "user_month"  # the owner's spend this calendar month (UTC)
    SCHEDULE_MONTH = "schedule_month"  # the run's schedule's spend this calendar month (UTC)


class BudgetPause(BaseModel):
    """Why a run is paused (status `paused`): a budget is spent. Raising it resumes the run."""

    reason: str = "budget_reached"
    budget: BudgetKind
    spent_usd: float
    limit_usd: float
    timeout_seconds: int  # then the run ends as budget_exceeded


class BudgetUpdate(BaseModel):
    """Payload of the `set_budget` signal: the run's new USD budget."""

    model_config = ConfigDict(extra="forbid")

    budget_usd: BudgetUsd


class CancelRequest(BaseModel):
    """Payload of the `cancel` signal. The run stops after the step in flight; if it is still going
    `hard_cancel_after_seconds` later, the workflow cancels itself outright (a durable timer in the
    run's history: it holds across gateway and worker restarts)."""

    hard_cancel_after_seconds: float | None = Field(default=None, ge=0, le=7 * 24 * 3600)


class ApprovalDecision(BaseModel):
    """Payload of the `approve` signal: one decision for all calls waiting at `turn`.

    A decision for a turn that is not waiting yet is kept for it. Required, for the same reason as
    `UnknownOutcomeDecision.keys`.
    """

    approved: bool
    turn: int = Field(ge=0)
    reason: str | None = Field(default=None, max_length=2000)


class UnknownOutcomeAction(StrEnum):
    RETRY = "retry"  # run the call again (the human checked it did not happen)
    SKIP = "skip"  # do not run it again; tell the model its outcome is unknown
    ABORT = "abort"  # end the run (status failed, error outcome_unknown)


class UnknownOutcomeDecision(BaseModel):
    """Payload of the `resolve_unknown` signal.

    `keys` names the calls decided (their idempotency keys, from `pending_unknown`); a decision for
    a call that is not waiting yet is kept for it. Required: "whatever waits now" is not a stable
    meaning, since a signal and the failure it decides may be applied in either order on replay.
    """

    action: UnknownOutcomeAction
    reason: str | None = Field(default=None, max_length=2000)
    keys: list[str] = Field(min_length=1, max_length=256)


class PendingUnknownOutcome(BaseModel):
    """An unsafe tool call whose outcome is unknown after a crash, waiting for a human."""

    call: PendingToolCall
    idempotency_key: str
    timeout_seconds: int


class AgentRunInput(BaseModel):
    """Input of `AgentWorkflow`: what the user asked for and the limits it runs under."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    goal: str = Field(min_length=1, max_length=32_000)
    toolkits: list[str] = Field(default_factory=list, max_length=32)
    model: str | None = None  # None: the worker's configured default
    max_tokens: int | None = Field(default=None, ge=1, le=64_000)
    max_iterations: int = Field(default=DEFAULT_MAX_ITERATIONS, ge=1, le=1_000)
    token_budget: int | None = Field(default=None, ge=1)
    system_prompt: str | None = Field(default=None, max_length=32_000)
    callback_url: str | None = None
    approval: ApprovalPolicy | None = None
    # Lifetime of the run's prompt-cache entries. None: the worker's KRON_PROMPT_CACHE_TTL, and 1h
    # once the run has waited longer than 5 minutes between model calls (see AgentWorkflow).
    cache_ttl: CacheTTL | None = None
    # An unsafe tool call whose outcome is unknown waits this long for retry/skip/abort, then skips.
    unknown_outcome_timeout_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    # USD the run may spend on model calls; reached, it pauses before its next call.
    budget_usd: BudgetUsd | None = None
    budget_pause_timeout_seconds: int = Field(default=DEFAULT_BUDGET_PAUSE_SECONDS, ge=1, le=30 * 24 * 3600)
    budget_soft_limit: float = Field(default=DEFAULT_BUDGET_SOFT_LIMIT, gt=0, le=1)
    # While paused on a monthly budget, the run checks again this often (raised, or a new month).
    budget_recheck_seconds: int = Field(default=900, ge=1, le=24 * 3600)
    schedule_name: str | None = Field(default=None, max_length=256)  # set for a schedule's fires
    # The schedule's USD budget per calendar month (UTC), over all its fires.
    schedule_monthly_budget_usd: BudgetUsd | None = None
    request_id: str | None = None
    # The agent definition the run was resolved from (its fields are copied in above, so a later
    # change to the agent never changes this run), and its tool rules (workflow patch tool-policy-v1).
    agent: AgentRef | None = None
    tool_policy: ToolPolicy | None = None
    # MCP servers whose tools the run may call (header values by reference, resolved by the worker).
    mcp_servers: McpServers = Field(default_factory=list)
    # Webhooks: the event types sent to callback_url (None: the terminal ones; see contracts.webhooks).
    webhook_events: list[WebhookEvent] | None = Field(default=None, max_length=16)
    # Set only by the workflow itself when it continues as new.
    checkpoint: Conversation | None = None


class AgentRunResult(BaseModel):
    """What a run ends with (also answered by the `result` query while it runs)."""

    status: RunStatus
    output: str = ""
    truncated: bool = False  # the model hit max_tokens and we finished with what there was
    error: RunError | None = None
    usage: Usage = Field(default_factory=Usage)
    turns: int = 0
    agent: AgentRef | None = None  # the agent definition (name, version) the run was resolved from


class RunProgress(BaseModel):
    """Answer of the `progress` query."""

    status: RunStatus
    turns: int
    steps: list[StepRecord]
    usage: Usage
    pending_approval: PendingApproval | None = None
    pending_unknown: list[PendingUnknownOutcome] = Field(default_factory=list)
    paused: BudgetPause | None = None  # while status is paused
    budget_usd: float | None = None  # the run's USD budget now (it may have been raised)
    # Set when the oldest tool results are left out of the model's view to fit its context window.
    context_note: str | None = None
    agent: AgentRef | None = None  # the agent definition (name, version) the run was resolved from
