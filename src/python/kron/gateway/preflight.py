"""Toolkit preflight: before a run starts, is the user connected to every toolkit it names?

`ToolkitConnections` is the port; production plugs in `kron.agent_core.composio_tools`'s
`ComposioToolProvider` (the one agent_core module the gateway may use). Importing composio takes
seconds, so it is imported lazily, in a thread, when the app starts (`Preflight.warm_up`) — never on
the import path of the gateway and never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kron.common.logging import get_logger
from kron.gateway.metrics import GatewayMetrics, PreflightOutcome
from kron.gateway.settings import GatewaySettings

log = get_logger(__name__)


class ToolkitConnections(Protocol):
    """What the gateway needs from Composio. Synchronous (the SDK is): called in threads."""

    def is_connected(self, user_id: str, toolkit: str) -> bool: ...

    def connect_link(self, user_id: str, toolkit: str, callback_url: str | None = None) -> str: ...


ConnectionsFactory = Callable[[], ToolkitConnections]


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


@dataclass(frozen=True)
class NotConnected:
    toolkit: str
    connect_url: str


class PreflightUnavailable(Exception):
    """Composio could not be asked (down, slow, refused our key): the dispatch cannot be checked."""


class ToolkitRejected(Exception):
    """Composio refused to make a connect link for this toolkit (unknown toolkit, typically)."""

    def __init__(self, toolkit: str) -> None:
        super().__init__(toolkit)
        self.toolkit = toolkit


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
        toolkit = toolkits[0]
        try:
            async with asyncio.timeout(self._timeout):
                connections = await self._adapter()
                connected = await asyncio.gather(
                    *(asyncio.to_thread(connections.is_connected, user_id, t) for t in toolkits)
                )
                missing = [t for t, ok in zip(toolkits, connected, strict=True) if not ok]
                self._metrics.preflight_checked(PreflightOutcome.CONNECTED, len(toolkits) - len(missing))
                self._metrics.preflight_checked(PreflightOutcome.NOT_CONNECTED, len(missing))
                if not missing:
                    return None
                toolkit = missing[0]
                link = await asyncio.to_thread(connections.connect_link, user_id, toolkit, self._callback_url)
                return NotConnected(toolkit, link)
        except TimeoutError:
            self._metrics.preflight_checked(PreflightOutcome.ERROR)
            log.warning("toolkit preflight timed out", timeout_seconds=self._timeout)
            raise PreflightUnavailable("Composio did not answer in time") from None
        except Exception as error:  # noqa: BLE001 - any adapter failure means "cannot check"
            status = getattr(error, "status_code", None)
            if isinstance(status, int) and 400 <= status < 500 and status not in (401, 403, 408, 429):
                # The adapter's request errors carry Composio's status: it refused this toolkit.
                raise ToolkitRejected(toolkit) from None
            self._metrics.preflight_checked(PreflightOutcome.ERROR)
            # The adapter redacts its key from messages; the type is enough for the log anyway.
            log.warning("toolkit preflight failed", exc_type=type(error).__name__, status_code=status)
            raise PreflightUnavailable("Composio could not be reached") from None

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
