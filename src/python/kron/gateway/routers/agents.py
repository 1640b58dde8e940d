"""Agents: named, versioned agent definitions that dispatches and schedules run by name.

Your own agents (made here) plus the shared ones the operator declares (an `Agent` resource or the
scheduler's YAML file), which everyone can read and run but nobody changes here (409). A name is
looked up among your own agents first. Every change makes a new immutable version; runs record the
version they ran. The definitions live in Temporal (`kron.common.agents`, hosted by the scheduler).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response
from pydantic import BaseModel, Field, ValidationError

from kron.common.agents import SHARED_OWNER, AgentNotFound
from kron.common.logging import get_logger
from kron.contracts.agents import (
    SOURCE_API,
    AgentName,
    AgentRecord,
    AgentSpec,
    AgentVersion,
    AgentView,
    PutAgent,
)
from kron.contracts.models import DNS_LABEL_PATTERN
from kron.gateway.agents import agent_errors, read_only
from kron.gateway.deps import Agents, CurrentUser, Settings
from kron.gateway.errors import ApiError, error_responses, validation_error
from kron.gateway.run_limits import mcp_server_errors
from kron.gateway.settings import GatewaySettings

log = get_logger(__name__)
router = APIRouter(prefix="/agents", tags=["agents"])

NamePath = Annotated[str, Path(pattern=DNS_LABEL_PATTERN, description="The agent's name.")]
VersionPath = Annotated[int, Path(ge=1, le=1_000_000, description="A version number (1, 2, ...).")]


class AgentCreate(AgentSpec):
    name: AgentName


class AgentPage(BaseModel):
    agents: list[AgentView] = Field(description="Your own agents, then the shared ones (name order).")


class VersionSummary(BaseModel):
    version: int
    created_at: datetime


class VersionPage(BaseModel):
    name: str
    versions: list[VersionSummary] = Field(description="Oldest first.")


def _require_allowed_mcp_servers(spec: AgentSpec, settings: GatewaySettings) -> None:
    """A user's agent may point the worker only at MCP servers the operator allows (SSRF), as a
    dispatch may; declared (operator) agents are not made here."""
    errors = mcp_server_errors(settings, spec.mcp_servers, loc=("body",))
    if errors:
        raise validation_error(errors)


async def _own_or_shared(store: Agents, user: str, name: str) -> tuple[AgentRecord, bool]:
    async with agent_errors(name):
        try:
            return await store.get(user, name), False
        except AgentNotFound:
            return await store.get(SHARED_OWNER, name), True


@router.get("", operation_id="list_agents", response_model=AgentPage,
            responses=error_responses(401, 503), summary="List your agents and the shared ones")
async def list_agents(user: CurrentUser, store: Agents) -> AgentPage:
    async with agent_errors(""):
        own = await store.list_owned(user)
        shared = await store.list_owned(SHARED_OWNER)
    return AgentPage(agents=[AgentView.of(r, shared=False) for r in own]
                     + [AgentView.of(r, shared=True) for r in shared])


@router.post("", status_code=201, operation_id="create_agent", response_model=AgentView,
             responses=error_responses(400, 401, 409, 413, 422, 503), summary="Create an agent (version 1)")
async def create_agent(
    body: AgentCreate, user: CurrentUser, store: Agents, settings: Settings, response: Response
) -> AgentView:
    spec = AgentSpec.model_validate(body.model_dump(exclude={"name"}))
    _require_allowed_mcp_servers(spec, settings)
    async with agent_errors(body.name):
        result = await store.put(user, PutAgent(name=body.name, spec=spec, mode="create"))
    response.headers["Location"] = f"/agents/{body.name}"
    log.info("agent created", user_id=user, agent=body.name, version=result.record.latest.version)
    return AgentView.of(result.record, shared=False)


@router.get("/{name}", operation_id="get_agent", response_model=AgentView,
            responses=error_responses(401, 404, 422, 503), summary="An agent's latest version")
async def get_agent(name: NamePath, user: CurrentUser, store: Agents) -> AgentView:
    record, shared = await _own_or_shared(store, user, name)
    return AgentView.of(record, shared=shared)


@router.get("/{name}/versions", operation_id="list_agent_versions", response_model=VersionPage,
            responses=error_responses(401, 404, 422, 503), summary="An agent's versions")
async def list_versions(name: NamePath, user: CurrentUser, store: Agents) -> VersionPage:
    record, _ = await _own_or_shared(store, user, name)
    return VersionPage(name=name, versions=[VersionSummary(version=v.version, created_at=v.created_at)
                                            for v in record.versions])


@router.get("/{name}/versions/{version}", operation_id="get_agent_version", response_model=AgentVersion,
            responses=error_responses(401, 404, 422, 503), summary="One version of an agent")
async def get_version(name: NamePath, version: VersionPath, user: CurrentUser, store: Agents) -> AgentVersion:
    record, _ = await _own_or_shared(store, user, name)
    found = record.version(version)
    if found is None:
        raise ApiError(404, "agent_not_found", f"Agent {name!r} has no version {version}")
    return found


@router.patch("/{name}", operation_id="update_agent", response_model=AgentView,
              responses=error_responses(400, 401, 404, 409, 413, 422, 503),
              summary="Change an agent: the fields given replace the latest version's, as a new version")
async def update_agent(
    name: NamePath,
    user: CurrentUser,
    store: Agents,
    settings: Settings,
    body: Annotated[dict[str, Any], Body(examples=[{"model": "claude-sonnet-5", "limits": {"max_iterations": 10}}])],
) -> AgentView:
    record, shared = await _own_or_shared(store, user, name)
    if shared:
        raise read_only(name, record.source)
    try:
        spec = AgentSpec.model_validate({**record.latest.spec.model_dump(), **body})
    except ValidationError as error:
        raise validation_error([
            {"loc": ["body", *(str(p) for p in e.get("loc", ()))], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))}
            for e in error.errors()[:20]
        ]) from None
    _require_allowed_mcp_servers(spec, settings)
    async with agent_errors(name):
        result = await store.put(user, PutAgent(name=name, spec=spec, mode="update"))
    log.info("agent updated", user_id=user, agent=name, version=result.record.latest.version,
             changed=result.changed)
    return AgentView.of(result.record, shared=False)


@router.delete("/{name}", status_code=204, operation_id="delete_agent",
               responses=error_responses(401, 404, 409, 422, 503),
               summary="Delete an agent: no new runs of it; runs already going finish as they were")
async def delete_agent(name: NamePath, user: CurrentUser, store: Agents) -> Response:
    record, shared = await _own_or_shared(store, user, name)
    if shared or record.source != SOURCE_API:
        raise read_only(name, record.source)
    async with agent_errors(name):
        await store.delete(user, name)
    log.info("agent deleted", user_id=user, agent=name)
    return Response(status_code=204)
