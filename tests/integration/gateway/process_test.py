"""The gateway as it runs in production: `python -m kron.gateway.main`, configured by environment."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx

from kron.gateway.app import create_app
from kron.gateway.preflight import DemoConnections
from kron.gateway.settings import GatewaySettings
from kron.gateway.tokens import issue_token
from kron_testing.processes import KronProcess
from kron_testing.temporal_server import TemporalDevServer, free_port

from ..conftest import COMPOSIO_KEY, Stack
from .conftest import JWT_SECRET


async def test_gateway_process_serves_liveness_and_readiness(
    temporal_server: TemporalDevServer, stack: Stack
) -> None:
    env = {
        "KRON_TEMPORAL_ADDRESS": temporal_server.address,
        "KRON_TASK_QUEUE": stack.task_queue,
        "KRON_PORT": "0",
        "KRON_JWT_SECRET": JWT_SECRET,
        "COMPOSIO_API_KEY": COMPOSIO_KEY,
        "COMPOSIO_BASE_URL": stack.composio.base_url,
        "KRON_LOG_LEVEL": "WARNING",
    }
    with KronProcess("kron.gateway.main", env, ready_marker="kron-gateway ready").wait_ready() as gateway:
        ready_line = next(line for line in gateway.output if "kron-gateway ready" in line)
        match = re.search(r"port=(\d+)", ready_line)
        assert match is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{match.group(1)}") as http:
            live = await http.get("/livez")
            assert (live.status_code, live.json()) == (200, {"status": "ok"})
            ready = await _ready(http)  # once the Composio SDK is loaded
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
            assert (await http.post("/auth/token", json={"user_id": "x"})).status_code == 404
        assert gateway.terminate(timeout=15) == 0


async def _ready(http: httpx.AsyncClient, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while (ready := await http.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        assert ready.json()["error"] in ("warming_up", "not_ready"), ready.text
        await asyncio.sleep(0.1)
    return ready


async def test_not_ready_until_the_preflight_adapter_is_loaded(temporal_server: TemporalDevServer) -> None:
    # Importing composio takes seconds of CPU: a pod must not get traffic before it is done.
    loaded = threading.Event()

    def slow_factory() -> DemoConnections:
        loaded.wait(timeout=30)
        return DemoConnections()

    settings = GatewaySettings(dev_mode=True, temporal_address=temporal_server.address)
    app = create_app(settings, connections_factory=slow_factory)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            warming = await http.get("/readyz")
            assert (warming.status_code, warming.json()["error"]) == (503, "warming_up")
            assert warming.headers["retry-after"] == "1"
            assert (await http.get("/livez")).status_code == 200
            loaded.set()
            ready = await _ready(http, timeout=10)
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_serves_but_is_not_ready_while_temporal_is_unreachable() -> None:
    # The app's own client, pointed at a port nobody listens on: it starts, lives, is not ready, and
    # task routes answer 503 (never 500) while it keeps trying to connect.
    settings = GatewaySettings(
        dev_mode=True, temporal_address=f"127.0.0.1:{free_port()}", composio_api_key=None,
        temporal_startup_wait_seconds=0,
    )
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {issue_token('someone', settings).access_token}"}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["error"] == "not_ready"
            assert (await http.get("/livez")).status_code == 200
            dispatch = await http.post("/tasks/dispatch", json={"goal": "x"}, headers=headers)
            assert dispatch.status_code == 503 and dispatch.json()["error"] == "temporal_unavailable"
            assert dispatch.headers["retry-after"]
