"""The scheduler's toolkit preflight at fire time (`kron.common.toolkit_preflight`): the Composio
adapter, built once, lazily (composio takes seconds to import) the first time a fire needs it, in a
thread. What a fire does with the answer is `activities.SchedulerActivities.check_toolkits`.
"""

from __future__ import annotations

import threading

from kron.common.toolkit_preflight import ConnectionsFactory, ToolkitConnections
from kron.scheduler.settings import SchedulerSettings


def composio_connections_factory(settings: SchedulerSettings) -> ConnectionsFactory | None:
    """The real Composio adapter, or None when no key is configured (fires skip the check)."""
    if settings.composio_api_key is None:
        return None
    api_key = settings.composio_api_key.get_secret_value()
    base_url = settings.composio_base_url

    def build() -> ToolkitConnections:
        from kron.agent_core.composio_tools import ComposioToolProvider

        return ComposioToolProvider(api_key=api_key, base_url=base_url, timeout=10.0, max_retries=1)

    return build


class LazyConnections:
    """Builds the adapter once, on first use, whichever thread asks first."""

    def __init__(self, factory: ConnectionsFactory | None) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._connections: ToolkitConnections | None = None

    @property
    def enabled(self) -> bool:
        return self._factory is not None

    def get(self) -> ToolkitConnections:
        assert self._factory is not None
        with self._lock:
            if self._connections is None:
                self._connections = self._factory()
            return self._connections
