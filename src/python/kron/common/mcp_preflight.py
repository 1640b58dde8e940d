"""MCP preflight: does every server a run names answer and list its tools, with the run's
credentials? Asked by the gateway before it starts a run (409 `mcp_server_unavailable`) and by the
scheduler before each fire (`preflight_failed`), so a run does not start only to find its tools gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from kron.common.mcp_connect import McpConnector, McpUnavailable, describe_failure
from kron.contracts.mcp import McpServer

MCP_SERVER_UNAVAILABLE = "mcp_server_unavailable"


@dataclass(frozen=True)
class ServerUnavailable:
    server: str
    reason: str  # holds no secret (see kron.common.mcp_connect.describe_failure)

    @property
    def message(self) -> str:
        return f"MCP server {self.server!r} is unavailable: {self.reason}"


async def first_unavailable(
    connector: McpConnector, servers: Sequence[McpServer], *, timeout_seconds: float
) -> ServerUnavailable | None:
    """Check every server at once (each within `timeout_seconds`); the first (in the order given)
    that failed, or None when all answered."""
    if not servers:
        return None
    outcomes = await asyncio.gather(*(_check(connector, s, timeout_seconds) for s in servers))
    return next((o for o in outcomes if o is not None), None)


async def _check(connector: McpConnector, server: McpServer, timeout_seconds: float) -> ServerUnavailable | None:
    try:
        async with asyncio.timeout(timeout_seconds):
            await connector.list_tools(server)
    except McpUnavailable as unavailable:
        return ServerUnavailable(server.name, unavailable.reason)
    except TimeoutError:
        return ServerUnavailable(server.name, f"no answer within {timeout_seconds:g} s")
    except Exception as error:  # noqa: BLE001 - any failure means "unavailable", described safely
        return ServerUnavailable(server.name, describe_failure(error))
    return None
