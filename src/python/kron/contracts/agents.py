"""Agent definitions: a named, versioned agent (prompt, model, tools, tool rules, limits) that runs
and schedules point at by name (`AgentRef`) instead of carrying the whole agent inline.

Every change makes a new immutable version (1, 2, 3 ...); old versions stay readable. A run is
resolved to one version when it starts and the definition is copied into its input
(`apply_agent`), so changing or deleting the agent later never changes a running run.

Where definitions live: `AgentRegistryWorkflow` (kron.scheduler.agent_registry), one per owner,
on the scheduler's task queue; the Temporal calls in kron.common.agents. Declared agents (the
`Agent` custom resource, or the scheduler's local YAML file) live in the registry of the shared
owner and are visible to every user, read-only over the API.

Shared by the gateway (REST, dispatch), the scheduler (sync, fires, the registry). Pure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from kron.contracts.mcp import McpServer
from kron.contracts.models import (
    DNS_LABEL_PATTERN,
    AgentRef,
    ApprovalPolicy,
    StrictBudgetUsd,
    ToolPermission,
    ToolPolicy,
)

# --- names

AGENT_REGISTRY_WORKFLOW: Final = "AgentRegistryWorkflow"
AGENT_REGISTRY_ID_PREFIX: Final = "kron-agents-"
# The registry of declared agents (shared by every user); a user's registry id hashes its owner.
SHARED_REGISTRY_ID: Final = f"{AGENT_REGISTRY_ID_PREFIX}shared"

# Updates (validated before they are recorded) and queries of AgentRegistryWorkflow.
UPDATE_PUT_AGENT: Final = "put_agent"
UPDATE_DELETE_AGENT: Final = "delete_agent"
UPDATE_SYNC_DECLARED: Final = "sync_declared"
QUERY_AGENTS: Final = "agents"
QUERY_AGENT: Final = "agent"

# Where a definition came from: the API (per user), or a declarative source's id (shared).
SOURCE_API: Final = "api"

# Why an update was refused (the ApplicationError type the registry raises in its validator).
ERROR_EXISTS: Final = "agent_exists"
ERROR_NOT_FOUND: Final = "agent_not_found"
ERROR_READ_ONLY: Final = "agent_read_only"
ERROR_FULL: Final = "agent_registry_full"

AgentName = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN)]
ToolkitSlug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]

MAX_MCP_SERVERS: Final = 16
DEFAULT_APPROVAL_TIMEOUT_SECONDS: Final = 3600


class AgentLimits(BaseModel):
    """Limits every run of the agent gets; a dispatch or schedule may only tighten them."""

    model_config = ConfigDict(extra="forbid")

    max_iterations: StrictInt | None = Field(default=None, ge=1, le=1000)
    token_budget: StrictInt | None = Field(default=None, ge=1, le=10**12)
    budget_usd: StrictBudgetUsd | None = None


class AgentSpec(BaseModel):
    """Everything one version of an agent says. Strict numbers, like schedule definitions."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=2000)
    system_prompt: str | None = Field(default=None, min_length=1, max_length=32_000)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=64_000)
    toolkits: list[ToolkitSlug] = Field(default_factory=list, max_length=32)
    mcp_servers: list[McpServer] = Field(default_factory=list, max_length=MAX_MCP_SERVERS)
    tool_policy: ToolPolicy = Field(default_factory=ToolPolicy)
    limits: AgentLimits = Field(default_factory=AgentLimits)
    approval_timeout_seconds: StrictInt = Field(
        default=DEFAULT_APPROVAL_TIMEOUT_SECONDS, ge=1, le=7 * 24 * 3600,
        description="A call the tool policy says to `ask` about is denied when undecided this long.",
    )

    @field_validator("toolkits")
    @classmethod
    def _normalise_toolkits(cls, toolkits: list[str]) -> list[str]:
        return list(dict.fromkeys(t.lower() for t in toolkits))

    @field_validator("mcp_servers")
    @classmethod
    def _unique_servers(cls, servers: list[McpServer]) -> list[McpServer]:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError("MCP server names must be unique within an agent")
        return servers


class AgentVersion(BaseModel):
    version: int = Field(ge=1)
    spec: AgentSpec
    created_at: datetime


class AgentRecord(BaseModel):
    """One agent in a registry: every version, oldest first. A deleted agent keeps its versions
    (runs name them) and its numbering: created again, it goes on from the last version."""

    name: AgentName
    source: str = SOURCE_API
    versions: list[AgentVersion] = Field(default_factory=list)
    deleted: bool = False

    @property
    def latest(self) -> AgentVersion:
        return self.versions[-1]

    def version(self, number: int) -> AgentVersion | None:
        return next((v for v in self.versions if v.version == number), None)


class AgentView(BaseModel):
    """An agent as the API shows it: the latest version's spec and where it lives."""

    name: str
    shared: bool = Field(description="Declared by the operator (CRD/YAML): visible to all, read-only here.")
    source: str
    latest_version: int
    spec: AgentSpec
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: AgentRecord, *, shared: bool) -> AgentView:
        return cls(
            name=record.name,
            shared=shared,
            source=record.source,
            latest_version=record.latest.version,
            spec=record.latest.spec,
            created_at=record.versions[0].created_at,
            updated_at=record.latest.created_at,
        )


# --- registry workflow I/O


class RegistryState(BaseModel):
    agents: dict[str, AgentRecord] = Field(default_factory=dict)


class RegistryInput(BaseModel):
    owner: str  # a user id, or "" for the shared registry
    state: RegistryState = Field(default_factory=RegistryState)
    # The registry's state travels in its continue-as-new input: Temporal refuses payloads over
    # 2 MB, so a change that would grow it past this is refused (ERROR_FULL).
    max_state_bytes: int = Field(default=1_500_000, ge=1)
    max_agents: int = Field(default=100, ge=1)


class PutAgent(BaseModel):
    """Create (`mode=create`), add a version (`update`), or either (`apply`, for declarative
    sources: no new version when the spec is unchanged)."""

    name: AgentName
    spec: AgentSpec
    source: str = SOURCE_API
    mode: Literal["create", "update", "apply"]


class PutResult(BaseModel):
    record: AgentRecord
    changed: bool


class DeleteAgent(BaseModel):
    name: AgentName
    source: str = SOURCE_API


class SyncDeclared(BaseModel):
    """A declarative source's whole set of agents: each is applied, and the source's agents it no
    longer declares are deleted."""

    source: str
    agents: dict[str, AgentSpec]
    # Declared but invalid now: they keep their last good version (not deleted).
    keep: list[str] = Field(default_factory=list)


class SyncResult(BaseModel):
    versions: dict[str, int]  # name -> latest version
    conflicts: dict[str, str] = Field(default_factory=dict)  # name -> source that has it
    deleted: list[str] = Field(default_factory=list)


class AgentQuery(BaseModel):
    name: AgentName
    version: int | None = None


# --- resolving a run


class AgentOverrides(BaseModel):
    """What a dispatch or a schedule's run template sets on top of the agent (None: not set)."""

    toolkits: list[str] | None = None
    model: str | None = None
    max_iterations: int | None = None
    token_budget: int | None = None
    budget_usd: float | None = None
    approval_required: list[str] = Field(default_factory=list)
    approval_timeout_seconds: int | None = None


def apply_agent(
    ref: AgentRef,
    spec: AgentSpec,
    overrides: AgentOverrides,
    *,
    loc: tuple[str, ...] = (),
    fields: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The `AgentRunInput` fields of a run of `spec` (version `ref.version`) with `overrides`, and
    the violations (FastAPI-style error dicts) when an override may not be made: limits only
    tighten, toolkits only narrow. `fields` renames override fields in error locations (the
    dispatch body calls the token budget `budget`)."""
    names = fields or {}
    errors: list[dict[str, Any]] = []

    def refuse(field: str, msg: str, kind: str) -> None:
        errors.append({"loc": [*loc, names.get(field, field)], "msg": msg, "type": kind})

    toolkits = list(spec.toolkits)
    if overrides.toolkits:
        wider = [t for t in overrides.toolkits if t not in spec.toolkits]
        if wider:
            refuse("toolkits", f"the agent does not have {', '.join(wider)}; a run may only use fewer", "agent_wider")
        toolkits = [t for t in overrides.toolkits if t in spec.toolkits]
    limits: dict[str, Any] = {}
    for field in ("max_iterations", "token_budget", "budget_usd"):
        mine, asked = getattr(spec.limits, field), getattr(overrides, field)
        if asked is not None and mine is not None and asked > mine:
            refuse(field, f"the agent allows at most {mine}; a run may only tighten its limits", "agent_looser")
        limits[field] = asked if asked is not None else mine
    policy = spec.tool_policy.model_copy(deep=True)
    asks = policy.default is ToolPermission.ASK or ToolPermission.ASK in policy.permissions.values()
    approval = None
    if overrides.approval_required or asks:
        approval = ApprovalPolicy(
            require_for=list(overrides.approval_required),
            timeout_seconds=overrides.approval_timeout_seconds or spec.approval_timeout_seconds,
        )
    run: dict[str, Any] = {
        "agent": AgentRef(name=ref.name, version=ref.version, shared=ref.shared),
        "toolkits": toolkits,
        "model": overrides.model or spec.model,
        "max_tokens": spec.max_tokens,
        "system_prompt": spec.system_prompt,
        "tool_policy": policy,
        "approval": approval,
        **limits,
    }
    if spec.mcp_servers:  # AgentRunInput.mcp_servers: the MCP tool sources (issue #12, MCP half)
        run["mcp_servers"] = list(spec.mcp_servers)
    return run, errors
