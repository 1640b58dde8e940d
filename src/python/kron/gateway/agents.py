"""Agent definitions as the gateway uses them: the store's refusals as API errors, and a dispatch
resolved against its agent (`run_fields`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from kron.common.agents import (
    AgentExists,
    AgentNotFound,
    AgentReadOnly,
    AgentRegistryFull,
    AgentStore,
    AgentsUnavailable,
)
from kron.contracts.agents import AgentOverrides, apply_agent
from kron.contracts.models import AgentRef
from kron.gateway.errors import ApiError, validation_error


def read_only(name: str, source: str) -> ApiError:
    return ApiError(409, "agent_read_only",
                    f"Agent {name!r} is declared by the operator ({source}); it is read-only here: change it there",
                    source=source)


@asynccontextmanager
async def agent_errors(name: str) -> AsyncIterator[None]:
    """The store's refusals as `{error, detail}` answers."""
    try:
        yield
    except AgentNotFound:
        raise ApiError(404, "agent_not_found", f"No agent named {name!r} (or no such version)") from None
    except AgentExists:
        raise ApiError(409, "agent_exists", f"You already have an agent named {name!r}") from None
    except AgentReadOnly as managed:
        raise read_only(name, managed.source) from None
    except AgentRegistryFull as full:
        raise ApiError(409, "agent_registry_full", str(full)) from None
    except AgentsUnavailable:
        raise ApiError(503, "agents_unavailable", "Agent definitions cannot be read now (the scheduler "
                       "hosts them); try again shortly", headers={"Retry-After": "2"}) from None


async def run_fields(
    store: AgentStore,
    user: str,
    ref: AgentRef,
    overrides: AgentOverrides,
    *,
    loc: tuple[str, ...],
    fields: dict[str, str],
) -> dict[str, Any]:
    """The `AgentRunInput` fields of a dispatch of agent `ref`: 404 for an unknown agent or version,
    422 when the dispatch would loosen the agent's limits or widen its toolkits."""
    async with agent_errors(ref.name):
        resolved, version = await store.resolve(user, ref)
    run, errors = apply_agent(resolved, version.spec, overrides, loc=loc, fields=fields)
    if errors:
        raise validation_error(errors)
    return run
