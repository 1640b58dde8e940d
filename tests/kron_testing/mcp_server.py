"""A real MCP server (the `mcp` SDK's `MCPServer`, streamable HTTP) for tests, on a free loopback port.

It runs uvicorn in a background thread of the test process, so workers in other processes reach it
too. Its tools, as an internal tool server would have them:

- `lookup(key)`: annotated read-only and idempotent; returns what it found. (The Authorization
  header each call came with is recorded in `calls`, never echoed back.)
- `delete_item(item_id)`: annotated destructive and not idempotent. `item_id < 0` raises a
  `ToolError` (an `isError` result, not a protocol error).

Every call is recorded (`calls`), and a test can hold a tool mid-call (`hold(tool)`) so a worker
can be killed while the call is in flight; `release()` lets held calls finish.

    with McpTestServer() as mcp:
        ... McpServer(name="notes", url=mcp.url) ...
        assert mcp.call_count("delete_item") == 1
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

from kron_testing.temporal_server import free_port


@dataclass(frozen=True)
class McpCall:
    tool: str
    arguments: dict[str, Any]
    authorization: str | None


@dataclass
class _Holds:
    tools: set[str] = field(default_factory=set)
    released: threading.Event = field(default_factory=threading.Event)


class McpTestServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.calls: list[McpCall] = []
        self._lock = threading.Lock()
        self._holds = _Holds()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build()

    # ---- what tests drive ------------------------------------------------------------------------
    def hold(self, tool: str) -> None:
        """Calls of `tool` wait (after being recorded) until `release()`."""
        self._holds.tools.add(tool)
        self._holds.released.clear()

    def release(self) -> None:
        self._holds.released.set()

    def call_count(self, tool: str | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if tool is None or c.tool == tool)

    def wait_calls(self, tool: str, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.call_count(tool) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} calls of {tool} after {timeout} s")
            time.sleep(0.05)

    # ---- the server ------------------------------------------------------------------------------
    def _build(self) -> MCPServer:
        srv = MCPServer("kron-test-tools", version="1.0")

        @srv.tool(
            description="Look an item up by key.",
            annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
        )
        async def lookup(key: str, ctx: Context) -> dict[str, Any]:
            await self._record("lookup", {"key": key}, ctx)
            return {"key": key, "found": True}

        @srv.tool(
            description="Delete an item for good.",
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
            ),
        )
        async def delete_item(item_id: int, ctx: Context) -> str:
            await self._record("delete_item", {"item_id": item_id}, ctx)
            if item_id < 0:
                raise ToolError(f"no such item {item_id}")
            return f"deleted {item_id}"

        return srv

    async def _record(self, tool: str, arguments: dict[str, Any], ctx: Context) -> None:
        auth = (ctx.headers or {}).get("authorization")
        with self._lock:
            self.calls.append(McpCall(tool, arguments, auth))
        if tool in self._holds.tools:
            while not self._holds.released.is_set():
                await asyncio.sleep(0.05)

    def start(self) -> Self:
        config = uvicorn.Config(
            self.app.streamable_http_app(), host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"mcp:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test MCP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.release()
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
