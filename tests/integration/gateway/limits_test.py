"""Per-user limits (kron.common.user_limits): defaults with per-user overrides, on dispatches and on
open event streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn

from kron_testing import fake_anthropic as replies
from kron_testing.polling import eventually

from ..conftest import Stack
from .conftest import Gateway, GatewayFactory, unique_user


async def test_a_users_own_dispatch_limit_overrides_the_default(make_gateway: GatewayFactory) -> None:
    tight, other = unique_user("tight"), unique_user("other")
    gateway = await make_gateway(user_limits={"users": {tight: {"dispatch_burst": 1, "dispatch_rate_per_second": 0.01}}})
    assert (await gateway.dispatch(tight)).status_code == 202
    refused = await gateway.dispatch(tight)
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert all([(await gateway.dispatch(other)).status_code == 202 for _ in range(3)])  # the default (1000)


def streams_held(gateway: Gateway, user: str) -> int:
    held: int = gateway.app.state.gateway.streams.held(user)
    return held


@asynccontextmanager
async def _served(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    server = uvicorn.Server(uvicorn.Config(gateway.app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        await serving


async def test_open_event_streams_are_capped_per_user_and_given_back(
    make_gateway: GatewayFactory, running_stack: Stack
) -> None:
    gateway = await make_gateway(max_streams=1)
    running_stack.llm.responder = lambda body, i: replies.delay(60, replies.text("too late"))
    user = unique_user()
    headers = await gateway.headers(user)
    task_id = (await gateway.dispatch(user)).json()["task_id"]
    path = f"/tasks/{task_id}/events"
    async with _served(gateway) as http:
        async with http.stream("GET", path, headers=headers) as first:
            assert first.status_code == 200
            # Hold the iterator: a dropped one is closed by asyncio's async-generator finalizer,
            # which closes the connection and frees the slot while the next request is made.
            chunks = first.aiter_text()
            await chunks.__anext__()  # the stream is open
            second = await http.get(path, headers=headers)
            assert second.status_code == 429 and second.json()["error"] == "too_many_streams"
            other = unique_user("other")  # another user's count is their own
            assert (await http.get(path, headers=await gateway.headers(other))).status_code == 404
            assert streams_held(gateway, user) == 1  # the first stream was open all along
        streams = gateway.app.state.gateway.streams

        async def released() -> None:
            assert streams.held(user) == 0

        await eventually(released, timeout=10)
        async with http.stream("GET", path, headers=headers) as again:
            assert again.status_code == 200
    await gateway.http.delete(f"/tasks/{task_id}", headers=headers)
