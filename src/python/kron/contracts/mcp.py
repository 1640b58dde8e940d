"""MCP servers as tool sources: how a run, a dispatch or an agent definition names one.

Shared by the gateway (dispatch, agents), the scheduler (fires) and the worker (tool activities).
Header values are references, never literal secrets: a definition, a dispatch body and a run's
workflow history name where the value comes from, and only the worker (or a preflight) reads it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

# A server's name namespaces its tools (see the worker's MCP tool source), so it is short and plain.
McpServerName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")]
# An HTTP header name (RFC 9110 token characters).
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")]
EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
# A Kubernetes object name / Secret data key.
SecretName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]
SecretKey = Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]{1,253}$")]


class SecretKeyRef(BaseModel):
    """One key of a Kubernetes Secret (as in a pod's `env[].valueFrom.secretKeyRef`)."""

    model_config = ConfigDict(extra="forbid")

    name: SecretName
    key: SecretKey


class HeaderValueFrom(BaseModel):
    """Where a header's value comes from: exactly one of an environment variable of the reading
    process or a Secret key."""

    model_config = ConfigDict(extra="forbid")

    env: EnvVarName | None = None
    secret_key_ref: SecretKeyRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HeaderValueFrom:
        if (self.env is None) == (self.secret_key_ref is None):
            raise ValueError("give exactly one of env or secret_key_ref")
        return self


class McpServer(BaseModel):
    """An MCP server (streamable HTTP) whose tools a run may call."""

    model_config = ConfigDict(extra="forbid")

    name: McpServerName
    url: str = Field(min_length=1, max_length=2048)
    # Header name -> where its value comes from. A plain string here is refused by validation: a
    # literal secret must never reach a definition or a run's history.
    headers: dict[HeaderName, HeaderValueFrom] = Field(default_factory=dict, max_length=32)


# The most servers one run, dispatch or agent may name.
MAX_MCP_SERVERS = 16


def _unique_names(servers: list[McpServer]) -> list[McpServer]:
    names = [s.name for s in servers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"MCP server names must be unique (repeated: {', '.join(duplicates)})")
    return servers


# A list of servers as a run, a dispatch or an agent carries it: names are unique (they namespace
# the servers' tools).
McpServers = Annotated[list[McpServer], Field(max_length=MAX_MCP_SERVERS), AfterValidator(_unique_names)]


class McpToolRef(BaseModel):
    """Which server's which tool a namespaced tool name (what the model sees) stands for."""

    server: McpServerName
    tool: str = Field(min_length=1, max_length=256)
