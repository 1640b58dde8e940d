from __future__ import annotations

import threading

import pytest

from kron.common.toolkit_preflight import ToolkitConnections, ToolkitRejected
from kron.gateway.errors import ApiError
from kron.gateway.metrics import GatewayMetrics
from kron.gateway.preflight import Preflight, PreflightUnavailable, composio_connections_factory
from kron.gateway.settings import GatewaySettings


class RefusedError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"refused with {status_code}")
        self.status_code = status_code


class InMemoryConnections:
    """A `ToolkitConnections` holding its answers in memory (the Composio-backed one is exercised
    against FakeComposio in tests/integration/gateway)."""

    def __init__(self, connected: set[tuple[str, str]], error: Exception | None = None) -> None:
        self.connected = connected
        self.error = error
        self.release = threading.Event()
        self.release.set()

    def is_connected(self, user_id: str, toolkit: str) -> bool:
        self.release.wait()
        if self.error is not None:
            raise self.error
        return (user_id, toolkit) in self.connected

    def connect_link(self, user_id: str, toolkit: str, callback_url: str | None = None) -> str:
        return f"https://connect.example/{toolkit}?user={user_id}&back={callback_url}"


def _preflight(connections: ToolkitConnections | None, timeout: float = 5.0) -> tuple[Preflight, GatewayMetrics]:
    metrics = GatewayMetrics()
    factory = (lambda: connections) if connections is not None else None
    return Preflight(factory, metrics, timeout_seconds=timeout, connect_callback_url="https://app/back"), metrics


def _count(metrics: GatewayMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("kron_preflight_total", {"outcome": outcome})
    return value or 0.0


async def test_first_unconnected_toolkit_gets_a_connect_link() -> None:
    preflight, metrics = _preflight(InMemoryConnections({("bob", "gmail")}))
    assert await preflight.first_unconnected("bob", ["gmail"]) is None
    missing = await preflight.first_unconnected("bob", ["gmail", "github", "slack"])
    assert missing is not None and missing.toolkit == "github"
    assert missing.connect_url == "https://connect.example/github?user=bob&back=https://app/back"
    assert (_count(metrics, "connected"), _count(metrics, "not_connected")) == (2, 2)


async def test_no_toolkits_no_check_and_no_adapter_means_skipped() -> None:
    preflight, metrics = _preflight(None)
    assert not preflight.enabled
    assert await preflight.first_unconnected("bob", []) is None
    assert await preflight.first_unconnected("bob", ["github"]) is None
    assert _count(metrics, "skipped") == 1


async def test_unreachable_composio_is_unavailable() -> None:
    preflight, metrics = _preflight(InMemoryConnections(set(), error=ConnectionError("down")))
    with pytest.raises(PreflightUnavailable):
        await preflight.first_unconnected("bob", ["github"])
    assert _count(metrics, "error") == 1


async def test_a_refused_toolkit_is_rejected_not_unavailable() -> None:
    preflight, _ = _preflight(InMemoryConnections(set(), error=RefusedError(400)))
    with pytest.raises(ToolkitRejected):
        await preflight.first_unconnected("bob", ["nosuchkit"])
    preflight, _ = _preflight(InMemoryConnections(set(), error=RefusedError(401)))  # our key: our problem
    with pytest.raises(PreflightUnavailable):
        await preflight.first_unconnected("bob", ["github"])


async def test_slow_composio_times_out() -> None:
    connections = InMemoryConnections(set())
    connections.release.clear()
    preflight, _ = _preflight(connections, timeout=0.2)
    try:
        with pytest.raises(PreflightUnavailable):
            await preflight.first_unconnected("bob", ["github"])
    finally:
        connections.release.set()


async def test_demo_mode_knows_only_the_demo_toolkit() -> None:
    settings = GatewaySettings(dev_mode=True, demo_mode=True)
    factory = composio_connections_factory(settings)
    assert factory is not None
    preflight = Preflight(factory, GatewayMetrics(), timeout_seconds=5.0, connect_callback_url=None)
    assert await preflight.first_unconnected("bob", ["demo"]) is None
    with pytest.raises(ToolkitRejected) as rejected:
        await preflight.first_unconnected("bob", ["demo", "github"])
    assert rejected.value.toolkit == "github"


async def test_require_connected_answers_as_the_api_does() -> None:
    preflight, _ = _preflight(InMemoryConnections({("bob", "gmail")}))
    await preflight.require_connected("bob", ["gmail"])
    with pytest.raises(ApiError) as missing:
        await preflight.require_connected("bob", ["gmail", "github"], then=", then retry")
    assert (missing.value.status_code, missing.value.error) == (409, "toolkit_not_connected")
    assert missing.value.detail == "Connect github first (open connect_url), then retry"
    assert missing.value.extra["connect_url"].startswith("https://connect.example/github")
    rejected, _ = _preflight(InMemoryConnections(set(), error=RefusedError(404)))
    with pytest.raises(ApiError) as refused:
        await rejected.require_connected("bob", ["nosuchkit"])
    assert (refused.value.status_code, refused.value.error, refused.value.extra) == (
        422, "toolkit_unavailable", {"toolkit": "nosuchkit"})
    down, _ = _preflight(InMemoryConnections(set(), error=ConnectionError("down")))
    with pytest.raises(ApiError) as unavailable:
        await down.require_connected("bob", ["github"])
    assert (unavailable.value.status_code, unavailable.value.headers) == (503, {"Retry-After": "2"})
