"""Fixtures for gateway tests: the real app on the session's Temporal server, talking to the real
Composio adapter pointed at the test's FakeComposio. Requests go through httpx's ASGI transport
(fast, in-process) or, for streaming, through a uvicorn server on a loopback port in the test loop.

Settings are production-like (not dev mode): a real JWT secret, a Composio key, the token endpoint
switched on explicitly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from kron.gateway.app import create_app
from kron.gateway.settings import GatewaySettings
from kron_testing.oidc_provider import OidcProvider
from kron_testing.polling import eventually as eventually  # re-exported to the tests here
from kron_testing.temporal_server import TemporalDevServer

from ..conftest import COMPOSIO_KEY, Stack

JWT_SECRET = "gateway-test-jwt-secret-0123456789abcdef"


def unique_user(name: str = "user") -> str:
    """Tests share one Temporal server: a fresh user id keeps each test's listings its own."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def settings_for(stack: Stack, temporal: TemporalDevServer, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "dev_mode": False,
        "jwt_secret": JWT_SECRET,
        "token_endpoint_enabled": True,
        "temporal_address": temporal.address,
        "task_queue": stack.task_queue,
        "composio_api_key": COMPOSIO_KEY,
        "composio_base_url": stack.composio.base_url,
        "dispatch_rate_per_second": 1000.0,
        "dispatch_burst": 1000,
        "sse_poll_seconds": 0.1,
        "query_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@dataclass
class Gateway:
    app: FastAPI
    http: httpx.AsyncClient
    settings: GatewaySettings

    async def headers(self, user_id: str) -> dict[str, str]:
        response = await self.http.post("/auth/token", json={"user_id": user_id})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def dispatch(self, user_id: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        body.setdefault("goal", "append some notes")
        return await self.http.post(
            "/tasks/dispatch", json=body, headers={**await self.headers(user_id), **(headers or {})}
        )

    async def task(self, user_id: str, task_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/tasks/{task_id}", headers=await self.headers(user_id))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_until_terminal(self, user_id: str, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        terminal = {"completed", "failed", "cancelled", "max_iterations", "budget_exceeded"}
        deadline = time.monotonic() + timeout
        while True:
            task = await self.task(user_id, task_id)
            if task["status"] in terminal and task["execution_status"] != "running":
                return task
            assert time.monotonic() < deadline, f"task still {task['status']}: {task}"
            await asyncio.sleep(0.1)

    async def list_ids(self, user_id: str, **params: Any) -> list[str]:
        response = await self.http.get("/tasks", params=params, headers=await self.headers(user_id))
        assert response.status_code == 200, response.text
        return [t["task_id"] for t in response.json()["tasks"]]


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    stack: Stack, temporal_server: TemporalDevServer, client: Client
) -> AsyncIterator[GatewayFactory]:
    """`await make_gateway(**settings_overrides)`: an app with its lifespan running, and a client."""
    async with AsyncExitStack() as exits:

        async def make(**overrides: Any) -> Gateway:
            settings = settings_for(stack, temporal_server, **overrides)
            app = create_app(settings, temporal_client=client)
            await exits.enter_async_context(app.router.lifespan_context(app))
            http = await exits.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
            )
            return Gateway(app, http, settings)

        yield make


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


@pytest.fixture
async def served_gateway(gateway: Gateway) -> AsyncIterator[Gateway]:
    """`gateway` behind a real uvicorn server on 127.0.0.1 (in this event loop): responses stream."""
    server = uvicorn.Server(uvicorn.Config(gateway.app, host="127.0.0.1", port=0, log_config=None,
                                           lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield Gateway(gateway.app, http, gateway.settings)
    server.should_exit = True
    await serving


# --- identity from a real OpenID provider (kron_testing.oidc_provider)


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[OidcProvider]:
    """A provider on loopback; account `root-admin` has the admin role (and another)."""
    with OidcProvider(tmp_path / "oidc", roles={"root-admin": ["admin", "ops"]}) as started:
        yield started


async def oidc_gateway(make_gateway: GatewayFactory, provider: OidcProvider, **overrides: Any) -> Gateway:
    """A gateway whose tokens come from `provider` (HS256 and /auth/token off)."""
    values: dict[str, Any] = {
        "oidc_issuer": provider.issuer,
        "oidc_audience": provider.audience,
        "token_endpoint_enabled": None,
        "oidc_jwks_refetch_seconds": 0,  # every unknown key id may refetch (rotation tests)
    }
    values.update(overrides)
    return await make_gateway(**values)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
