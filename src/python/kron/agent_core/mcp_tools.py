"""MCP tools as the model sees them: namespaced names and safety classes (pure, no I/O).

Names. A run's tools come from Composio and from any number of MCP servers, and the model knows a
tool only by its name, which the Messages API limits to `^[a-zA-Z0-9_-]{1,64}$`. An MCP tool is
named `mcp__<server>__<tool>`:
- the lowercase `mcp__` prefix never equals a Composio slug (those are uppercase, `GITHUB_...`);
- server names are `[a-z0-9-]` (no `_`: see `kron.contracts.mcp.McpServerName`), so the first `__`
  after the prefix ends the server name and two servers can never produce the same name;
- a tool name that does not fit (characters outside the alphabet, or too long) is cut and given a
  digest of the server and the original name: deterministic, so every listing of the same server
  gives the same names.
The name is also how approval policies and KRON_TOOL_SAFETY address MCP tools: `mcp__notes` covers
every tool of server `notes` (prefix match on `_`, as a toolkit covers its slugs).

Safety. From the tool's MCP annotations: `readOnlyHint` → read_only; `idempotentHint` → idempotent
(repeating it has no further effect, destructive or not); anything else, unannotated included →
unsafe. A deployment's KRON_TOOL_SAFETY entry for the name wins over the annotations.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from kron.contracts.models import ToolSafety

MCP_TOOL_PREFIX = "mcp__"
SERVER_SEPARATOR = "__"
MAX_TOOL_NAME = 64  # the Messages API's limit on a tool name
_ALLOWED = re.compile(r"^[a-zA-Z0-9_-]+$")
_DISALLOWED_CHAR = re.compile(r"[^a-zA-Z0-9_-]")
_DIGEST_CHARS = 8


def server_prefix(server: str) -> str:
    """What every tool name of `server` starts with (also the approval/safety key for all of them)."""
    return f"{MCP_TOOL_PREFIX}{server}{SERVER_SEPARATOR}"


def namespaced_name(server: str, tool: str) -> str:
    """The name the model sees for `tool` of `server` (see the module docstring)."""
    prefix = server_prefix(server)
    name = prefix + tool
    if _ALLOWED.match(tool) and len(name) <= MAX_TOOL_NAME:
        return name
    digest = hashlib.sha256(f"{server}/{tool}".encode()).hexdigest()[:_DIGEST_CHARS]
    readable = _DISALLOWED_CHAR.sub("_", tool)[: MAX_TOOL_NAME - len(prefix) - _DIGEST_CHARS - 1]
    return f"{prefix}{readable}_{digest}"


def is_mcp_tool(name: str) -> bool:
    return name.startswith(MCP_TOOL_PREFIX)


def safety_from_annotations(
    *, read_only: bool | None, idempotent: bool | None, destructive: bool | None
) -> ToolSafety:
    """The safety class MCP annotations give (hints the server declares; None: not declared).
    `destructive` does not change the class: a destructive call that is idempotent (delete by id)
    may run twice, one that is not is unsafe anyway."""
    del destructive  # see the docstring
    if read_only:
        return ToolSafety.READ_ONLY
    if idempotent:
        return ToolSafety.IDEMPOTENT
    return ToolSafety.UNSAFE


def tool_definition(
    name: str, description: str | None, input_schema: Mapping[str, Any], *, server: str
) -> dict[str, Any]:
    """A Messages API tool definition for an MCP tool."""
    schema = dict(input_schema) if input_schema else {"type": "object", "properties": {}}
    schema.setdefault("type", "object")
    return {
        "name": name,
        "description": (description or "").strip() or f"A tool of the MCP server {server}.",
        "input_schema": schema,
    }
