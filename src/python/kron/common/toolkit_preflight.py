"""Toolkit preflight: is a user connected to every toolkit a run names? Asked by the gateway before
it starts a run or makes a schedule, and by the scheduler before each fire.

`ToolkitConnections` is the port; production plugs in `kron.agent_core.composio_tools`'s
`ComposioToolProvider` (each deployable builds it, with its own timeouts). What stays with each
deployable is what it does with the answer: the gateway's timeout, metrics and API errors, the
scheduler's retries (a Temporal activity).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class ToolkitConnections(Protocol):
    """What the preflight needs from Composio. Synchronous (the SDK is): called in threads."""

    def is_connected(self, user_id: str, toolkit: str) -> bool: ...

    def connect_link(self, user_id: str, toolkit: str, callback_url: str | None = None) -> str: ...


ConnectionsFactory = Callable[[], ToolkitConnections]


@dataclass(frozen=True)
class NotConnected:
    toolkit: str
    connect_url: str


@dataclass(frozen=True)
class ConnectionCheck:
    """`missing`: the toolkits (in the order given) the user has not connected; `first`: the first
    of them with a link to connect it (None when nothing is missing)."""

    missing: list[str] = field(default_factory=list)
    first: NotConnected | None = None


class ToolkitRejected(Exception):
    """Composio refused this toolkit (unknown toolkit, typically): asking again will not help."""

    def __init__(self, toolkit: str) -> None:
        super().__init__(toolkit)
        self.toolkit = toolkit


# Client errors that are about us, not the toolkit: our key (401, 403), Composio's own timeout
# (408) or rate limit (429). Composio may answer differently next time.
_NOT_ABOUT_THE_TOOLKIT = frozenset({401, 403, 408, 429})


def rejects_toolkit(error: BaseException) -> bool:
    """Whether an adapter error means Composio refused the toolkit: the adapter's request errors
    carry Composio's HTTP status; a 4xx other than the ones above is about the request itself."""
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in _NOT_ABOUT_THE_TOOLKIT


async def check_connections(
    connections: ToolkitConnections, user_id: str, toolkits: Sequence[str], *, callback_url: str | None
) -> ConnectionCheck:
    """Ask about every toolkit at once (each in a thread), then make a connect link for the first
    missing one. Raises `ToolkitRejected` when Composio refuses a toolkit; any other adapter error
    propagates (the caller decides: the gateway answers 503, the scheduler retries)."""
    toolkit = toolkits[0] if toolkits else ""
    try:
        connected = await asyncio.gather(
            *(asyncio.to_thread(connections.is_connected, user_id, t) for t in toolkits)
        )
        missing = [t for t, ok in zip(toolkits, connected, strict=True) if not ok]
        if not missing:
            return ConnectionCheck()
        toolkit = missing[0]
        link = await asyncio.to_thread(connections.connect_link, user_id, toolkit, callback_url)
    except Exception as error:
        if rejects_toolkit(error):
            raise ToolkitRejected(toolkit) from None
        raise
    return ConnectionCheck(missing=missing, first=NotConnected(toolkit, link))
