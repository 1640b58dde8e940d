"""Dispatching a run that names MCP servers: the allow-list (no pointing the worker at internal
addresses), header values only by reference (422), the preflight (409 `mcp_server_unavailable`),
and a run that uses the server's tools."""

from __future__ import annotations

from typing import Any

import pytest

from kron_testing import fake_anthropic as replies
from kron_testing.mcp_server import McpTestServer

from ..conftest import Stack
from .conftest import Gateway, GatewayFactory, unique_user

TOKEN_ENV = "MCP_GATEWAY_TEST_TOKEN"


def server(url: str, **headers: Any) -> dict[str, Any]:
    return {"name": "tools", "url": url, "headers": headers}


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by the preflight (gateway) and the in-process worker alike.
    monkeypatch.setenv(TOKEN_ENV, "Bearer gateway-test-token")


async def _allowing(make_gateway: GatewayFactory, mcp: McpTestServer) -> Gateway:
    return await make_gateway(mcp_url_allowlist=[f"http://127.0.0.1:{mcp.port}/"])


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/admin",  # a cluster-local service
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://[::1]:9464/metrics",
    "http://localhost/mcp",
])
async def test_a_user_cannot_point_the_worker_at_an_internal_address(
    make_gateway: GatewayFactory, mcp_server: McpTestServer, url: str
) -> None:
    gateway = await _allowing(make_gateway, mcp_server)  # the test server's own port only
    response = await gateway.dispatch(unique_user(), mcp_servers=[server(url)])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error" and "allow-list" in body["detail"]
    assert mcp_server.call_count() == 0


async def test_without_an_allow_list_a_dispatch_names_no_mcp_server(
    gateway: Gateway, mcp_server: McpTestServer
) -> None:
    response = await gateway.dispatch(unique_user(), mcp_servers=[server(mcp_server.url)])
    assert response.status_code == 422 and response.json()["error"] == "validation_error"


async def test_a_literal_header_value_is_refused_and_not_echoed(
    make_gateway: GatewayFactory, mcp_server: McpTestServer
) -> None:
    gateway = await _allowing(make_gateway, mcp_server)
    response = await gateway.dispatch(
        unique_user(), mcp_servers=[server(mcp_server.url, Authorization="Bearer literal-secret")]
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error" and "mcp_servers" in body["detail"]
    assert "literal-secret" not in response.text


async def test_a_header_from_a_non_mcp_env_var_is_refused(
    make_gateway: GatewayFactory, mcp_server: McpTestServer
) -> None:
    gateway = await _allowing(make_gateway, mcp_server)
    response = await gateway.dispatch(
        unique_user(), mcp_servers=[server(mcp_server.url, Authorization={"env": "ANTHROPIC_API_KEY"})]
    )
    assert response.status_code == 422, response.text
    assert "must start with MCP_" in response.json()["detail"]


async def test_a_server_down_at_dispatch_is_409_naming_it(
    make_gateway: GatewayFactory, mcp_server: McpTestServer
) -> None:
    gateway = await _allowing(make_gateway, mcp_server)
    mcp_server.stop()
    response = await gateway.dispatch(
        unique_user(), mcp_servers=[server(mcp_server.url, Authorization={"env": TOKEN_ENV})]
    )
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "mcp_server_unavailable" and body["server"] == "tools"
    assert "'tools'" in body["detail"] and "could not connect" in body["detail"]


async def test_an_unset_credential_is_409_naming_the_reference_not_a_value(
    make_gateway: GatewayFactory, mcp_server: McpTestServer
) -> None:
    gateway = await _allowing(make_gateway, mcp_server)
    response = await gateway.dispatch(
        unique_user(), mcp_servers=[server(mcp_server.url, Authorization={"env": "MCP_NOT_SET_ANYWHERE"})]
    )
    assert response.status_code == 409, response.text
    assert "MCP_NOT_SET_ANYWHERE is not set" in response.json()["detail"]
    assert mcp_server.call_count() == 0


async def test_a_dispatched_run_calls_the_allowed_server(
    make_gateway: GatewayFactory, running_stack: Stack, mcp_server: McpTestServer
) -> None:
    gateway = await _allowing(make_gateway, mcp_server)
    user = unique_user()

    def respond(body: dict[str, Any], index: int) -> replies.Reply:
        if replies.turn_of(body) == 0:
            return replies.tool_use([("mcp__tools__lookup", {"key": "k"})])
        return replies.text("found it")

    running_stack.llm.responder = respond
    response = await gateway.dispatch(
        user, mcp_servers=[server(mcp_server.url, Authorization={"env": TOKEN_ENV})]
    )
    assert response.status_code == 202, response.text
    task = await gateway.wait_until_terminal(user, response.json()["task_id"])
    assert task["status"] == "completed" and task["output"] == "found it"
    assert [c.authorization for c in mcp_server.calls] == ["Bearer gateway-test-token"]


async def test_a_user_schedule_cannot_name_an_internal_address_either(
    make_gateway: GatewayFactory, mcp_server: McpTestServer
) -> None:
    gateway = await _allowing(make_gateway, mcp_server)
    user = unique_user()
    body = {"name": "nightly", "timing": {"cron": ["0 3 * * *"]},
            "run": {"goal": "g", "mcp_servers": [server("http://169.254.169.254/latest/")]}}
    response = await gateway.http.post("/schedules", json=body, headers=await gateway.headers(user))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error" and "allow-list" in response.json()["detail"]
