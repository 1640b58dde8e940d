"""The gateway's toolkit preflight (`kron.common.toolkit_preflight`) with what is the gateway's own: a
timeout (a user is waiting on the dispatch), metrics, and "cannot check" as one exception.

Production plugs in `kron.agent_core.composio_tools`'s `ComposioToolProvider` (the one agent_core
module the gateway may use). Importing composio takes seconds, so it is imported lazily, in a thread,
when the app starts (`Preflight.warm_up`) — never on the import path of the gateway and never on the
event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from kron.common.logging import get_logger
from kron.common.mcp_connect import McpConnector
from kron.common.mcp_preflight import MCP_SERVER_UNAVAILABLE, first_unavailable
from kron.common.toolkit_preflight import (
    ConnectionsFactory,
    NotConnected,
    ToolkitConnections,
    ToolkitRejected,
    check_connections,
)
from kron.contracts.mcp import McpServer
from kron.gateway.errors import ApiError
from kron.gateway.metrics import GatewayMetrics, PreflightOutcome
from kron.gateway.settings import GatewaySettings

log = get_logger(__name__)


def composio_connections_factory(settings: GatewaySettings) -> ConnectionsFactory | None:
    """The real Composio adapter, or None when no key is configured (dev mode: checks skipped).
    In demo mode, the offline demo tools instead: only the `demo` toolkit is connected."""
    if settings.demo_mode:
        return DemoConnections
    if settings.composio_api_key is None:
        return None
    api_key = settings.composio_api_key.get_secret_value()
    base_url = settings.composio_base_url

    def build() -> ToolkitConnections:
        from kron.agent_core.composio_tools import ComposioToolProvider

        # Short timeouts: a user is waiting on the dispatch. One retry for reads.
        return ComposioToolProvider(api_key=api_key, base_url=base_url, timeout=5.0, max_retries=1)

    return build


class DemoToolkitOnly(Exception):
    """Demo mode has nothing to connect: any toolkit but `demo` is refused (422 toolkit_unavailable)."""

    status_code = 404


class DemoConnections:
    """The preflight of the offline demo: `kron.agent_core.demo.DemoTools` answers (every user has
    the `demo` toolkit, nothing else)."""

    def __init__(self) -> None:
        from kron.agent_core.demo import DemoTools

        self._tools = DemoTools()

    def is_connected(self, user_id: str, toolkit: str) -> bool:
        return self._tools.is_connected(user_id, toolkit)

    def connect_link(self, user_id: str, toolkit: str, callback_url: str | None = None) -> str:
        raise DemoToolkitOnly(f"offline demo: only the demo toolkit exists, not {toolkit!r}")


class PreflightUnavailable(Exception):
    """Composio could not be asked (down, slow, refused our key): the dispatch cannot be checked."""


class Preflight:
    def __init__(
        self,
        factory: ConnectionsFactory | None,
        metrics: GatewayMetrics,
        *,
        timeout_seconds: float,
        connect_callback_url: str | None,
    ) -> None:
        self._factory = factory
        self._metrics = metrics
        self._timeout = timeout_seconds
        self._callback_url = connect_callback_url
        self._connections: asyncio.Task[ToolkitConnections] | None = None

    @property
    def enabled(self) -> bool:
        return self._factory is not None

    @property
    def warming_up(self) -> bool:
        """Still building the adapter: importing composio takes seconds of CPU, in which requests
        would wait on the GIL (and the first preflights on the import); /readyz says not ready."""
        return self._connections is not None and not self._connections.done()

    def warm_up(self) -> None:
        """Start building the adapter (imports composio) in a thread; call from the running loop."""
        if self._factory is not None and self._connections is None:
            self._connections = asyncio.create_task(asyncio.to_thread(self._factory))

    async def aclose(self) -> None:
        if self._connections is not None and not self._connections.done():
            self._connections.cancel()  # the thread finishes the import on its own

    async def first_unconnected(self, user_id: str, toolkits: Sequence[str]) -> NotConnected | None:
        """The first toolkit (in the order given) the user has not connected, with a link to
        connect it; None when every toolkit is connected or the check is disabled."""
        if not toolkits:
            return None
        if self._factory is None:
            self._metrics.preflight_checked(PreflightOutcome.SKIPPED, len(toolkits))
            return None
        try:
            async with asyncio.timeout(self._timeout):
                connections = await self._adapter()
                check = await check_connections(connections, user_id, toolkits, callback_url=self._callback_url)
        except ToolkitRejected:
            raise
        except TimeoutError:
            self._metrics.preflight_checked(PreflightOutcome.ERROR)
            log.warning("toolkit preflight timed out", timeout_seconds=self._timeout)
            raise PreflightUnavailable("Composio did not answer in time") from None
        except Exception as error:  # noqa: BLE001 - any adapter failure means "cannot check"
            self._metrics.preflight_checked(PreflightOutcome.ERROR)
            # The adapter redacts its key from messages; the type is enough for the log anyway.
            log.warning("toolkit preflight failed", exc_type=type(error).__name__,
                        status_code=getattr(error, "status_code", None))
            raise PreflightUnavailable("Composio could not be reached") from None
        self._metrics.preflight_checked(PreflightOutcome.CONNECTED, len(toolkits) - len(check.missing))
        self._metrics.preflight_checked(PreflightOutcome.NOT_CONNECTED, len(check.missing))
        return check.first

    async def require_connected(self, user_id: str, toolkits: Sequence[str], *, then: str = "") -> None:
        """`first_unconnected` as the API answers it, for every route that starts runs: 409
        `toolkit_not_connected` with the link (`then`: what to do after connecting), 422
        `toolkit_unavailable`, 503 `preflight_unavailable`."""
        try:
            missing = await self.first_unconnected(user_id, toolkits)
        except PreflightUnavailable:
            raise ApiError(503, "preflight_unavailable", "Could not check your toolkit connections; try again shortly",
                           headers={"Retry-After": "2"}) from None
        except ToolkitRejected as rejected:
            raise ApiError(422, "toolkit_unavailable", f"Toolkit {rejected.toolkit!r} cannot be connected",
                           toolkit=rejected.toolkit) from None
        if missing is not None:
            raise ApiError(409, "toolkit_not_connected", f"Connect {missing.toolkit} first (open connect_url){then}",
                           toolkit=missing.toolkit, connect_url=missing.connect_url)

    async def _adapter(self) -> ToolkitConnections:
        failed = self._connections is not None and self._connections.done() and (
            self._connections.cancelled() or self._connections.exception() is not None
        )
        if self._connections is None or failed:
            self._connections = None  # building failed before: try again
            self.warm_up()
        assert self._connections is not None
        # Shielded: a dispatch that times out must not cancel the import for everyone else.
        return await asyncio.shield(self._connections)


async def require_mcp_available(
    connector: McpConnector, servers: Sequence[McpServer], *, timeout_seconds: float, then: str = ""
) -> None:
    """Every MCP server answers and lists its tools with the run's credentials, or 409
    `mcp_server_unavailable` naming the first that did not and why (never a header value)."""
    unavailable = await first_unavailable(connector, servers, timeout_seconds=timeout_seconds)
    if unavailable is not None:
        log.warning("MCP preflight failed", server=unavailable.server, reason=unavailable.reason)
        raise ApiError(409, MCP_SERVER_UNAVAILABLE, unavailable.message + then,
                       server=unavailable.server, reason=unavailable.reason)
