"""Activities for MCP servers as tool sources: list a run's MCP tools once, call one tool per activity.

The crash rules are the Composio ones (`AgentWorkflow._execute_tool` picks the step options by the
tool's safety): a failure to connect (no request reached the server) is `tool_not_executed`, which
even an unsafe call may retry; any other transport or protocol failure is `tool_transport_error`
(the call may have acted). A result with `isError` is the tool's own answer: an error tool_result
for that call, not a failed activity.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mcp_types import CallToolResult, EmbeddedResource, ImageContent, TextContent, Tool
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from kron.agent_core import mcp_tools
from kron.agent_core.tool_safety import ToolSafetyPolicy
from kron.agent_core.types import ToolCall, ToolResult
from kron.common.logging import get_logger
from kron.common.mcp_connect import (
    McpConnector,
    McpUnavailable,
    connection_refused,
    describe_failure,
)
from kron.contracts.mcp import McpServer, McpServers, McpToolRef
from kron.contracts.models import ToolSafety
from kron.worker import metrics
from kron.worker.activities import TOOL_NOT_EXECUTED, TOOL_TRANSPORT_ERROR, heartbeating
from kron.worker.step_options import HEARTBEAT_INTERVAL

log = get_logger(__name__)

# A tool result longer than this is cut (the model's context is the limit that matters).
MAX_RESULT_CHARS = 100_000


class ListMcpToolsInput(BaseModel):
    servers: McpServers


class McpToolset(BaseModel):
    """A run's MCP tools: definitions for the model, and per namespaced name its server and tool
    and its safety class (from annotations, or the deployment's KRON_TOOL_SAFETY)."""

    tools: list[dict[str, Any]] = Field(default_factory=list)
    refs: dict[str, McpToolRef] = Field(default_factory=dict)
    safety: dict[str, ToolSafety] = Field(default_factory=dict)


class McpCallInput(BaseModel):
    server: McpServer
    tool: str  # the server's own name for it
    call: ToolCall  # as the model asked (namespaced name)
    idempotency_key: str
    transcript_id: str | None = None


StoreResult = Callable[[str, ToolResult], Awaitable[ToolResult]]


class McpActivities:
    def __init__(
        self,
        connector: McpConnector,
        *,
        safety_policy: ToolSafetyPolicy | None = None,
        store_result: StoreResult | None = None,
        heartbeat_interval_seconds: float = HEARTBEAT_INTERVAL.total_seconds(),
    ) -> None:
        """`store_result(run_id, result)`: how the run's transcript keeps a result (the agent
        activities' own store), for runs whose conversation is there."""
        self._connector = connector
        self._safety = safety_policy or ToolSafetyPolicy()
        self._store_result = store_result
        self._heartbeat_interval = heartbeat_interval_seconds

    def all(self) -> list[Any]:
        return [self.list_mcp_tools, self.call_mcp_tool]

    @activity.defn(name="list_mcp_tools")
    async def list_mcp_tools(self, input: ListMcpToolsInput) -> McpToolset:
        async with heartbeating(self._heartbeat_interval):
            try:
                listings = await asyncio.gather(*(self._connector.list_tools(s) for s in input.servers))
            except McpUnavailable as unavailable:
                log.warning("MCP tool listing failed", server=unavailable.server, reason=unavailable.reason)
                raise ApplicationError(str(unavailable), type=TOOL_TRANSPORT_ERROR) from None
        toolset = McpToolset()
        for server, tools in zip(input.servers, listings, strict=True):
            for tool in tools:
                self._add(toolset, server.name, tool)
        return toolset

    def _add(self, toolset: McpToolset, server: str, tool: Tool) -> None:
        name = mcp_tools.namespaced_name(server, tool.name)
        if name in toolset.refs:  # a digest collision (or a server listing a tool twice)
            log.warning("MCP tool left out: its name collides", server=server, tool=name)
            return
        hints = tool.annotations
        safety = self._safety.override(name) or mcp_tools.safety_from_annotations(
            read_only=hints.read_only_hint if hints else None,
            idempotent=hints.idempotent_hint if hints else None,
            destructive=hints.destructive_hint if hints else None,
        )
        toolset.tools.append(mcp_tools.tool_definition(name, tool.description, tool.input_schema, server=server))
        toolset.refs[name] = McpToolRef(server=server, tool=tool.name)
        toolset.safety[name] = safety

    @activity.defn(name="call_mcp_tool")
    async def call_mcp_tool(self, input: McpCallInput) -> ToolResult:
        started = time.monotonic()
        try:
            async with heartbeating(self._heartbeat_interval):
                answer = await self._call(input)
        finally:
            metrics.STEP_DURATION.labels(kind="tool").observe(time.monotonic() - started)
        result = ToolResult(
            tool_use_id=input.call.id,
            content=_text_of(answer),
            is_error=bool(answer.is_error),
            duration_seconds=time.monotonic() - started,
        )
        metrics.TOOL_CALLS.labels(outcome="error" if result.is_error else "ok").inc()
        log.info("MCP tool call done", server=input.server.name, tool=input.tool, is_error=result.is_error,
                 duration_seconds=round(result.duration_seconds, 4))
        if input.transcript_id is not None and self._store_result is not None:
            return await self._store_result(input.transcript_id, result)
        return result

    async def _call(self, input: McpCallInput) -> CallToolResult:
        try:
            async with self._connector.client(input.server) as client:
                try:
                    return await client.call_tool(input.tool, input.call.input)
                except Exception as exc:  # noqa: BLE001 - judged below, described safely
                    refused = connection_refused(exc)
                    reason = describe_failure(exc)
        except McpUnavailable as unavailable:
            refused, reason = unavailable.not_sent, unavailable.reason
        metrics.TOOL_CALLS.labels(outcome="transport_error").inc()
        log.warning("MCP tool call failed", server=input.server.name, tool=input.tool, reason=reason,
                    not_sent=refused)
        raise ApplicationError(
            f"MCP server {input.server.name!r}: {reason}",
            type=TOOL_NOT_EXECUTED if refused else TOOL_TRANSPORT_ERROR,
        )


def _text_of(result: CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, ImageContent):
            parts.append(f"[image {block.mime_type}]")
        elif isinstance(block, EmbeddedResource):
            text = getattr(block.resource, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {block.resource.uri}]")
        else:
            parts.append(f"[{block.type}]")
    text = "\n".join(parts) if parts else ("" if result.structured_content is None else str(result.structured_content))
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "\n[cut]"
