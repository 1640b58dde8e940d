"""MCP servers as tool sources, on real Temporal with a real MCP server (the `mcp` SDK's MCPServer).

A run lists the server's tools once, calls them through their namespaced names, and gets the crash
rules of Composio calls from the tools' MCP annotations: the destructive `delete_item` in flight
when its worker is SIGKILLed becomes `outcome_unknown`; the read-only `lookup` is simply retried.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowHistory

from kron.common.mcp_connect import McpConnector
from kron.contracts import names
from kron.contracts.mcp import HeaderValueFrom, McpServer, SecretKeyRef
from kron.contracts.models import (
    AgentRunResult,
    RunProgress,
    RunStatus,
    UnknownOutcomeAction,
    UnknownOutcomeDecision,
)
from kron.worker.main import build_worker
from kron.worker.mcp_activities import McpActivities
from kron.worker.settings import WorkerSettings
from kron_testing import fake_anthropic as replies
from kron_testing.mcp_server import McpTestServer
from kron_testing.temporal_server import TemporalDevServer

from .conftest import Stack, make_activities, spawn_worker

TOKEN_ENV = "MCP_KRON_TEST_TOKEN"
TOKEN = "mcp-token-that-must-never-reach-a-history"
LOOKUP = "mcp__tools__lookup"
DELETE = "mcp__tools__delete_item"


def tools_server(mcp: McpTestServer) -> McpServer:
    return McpServer(name="tools", url=mcp.url, headers={"Authorization": HeaderValueFrom(env=TOKEN_ENV)})


def script(*calls: tuple[str, Mapping[str, Any]]) -> replies.Responder:
    """Turn n calls `calls[n]`; then the run ends."""

    def respond(body: dict[str, Any], index: int) -> replies.Reply:
        turn = replies.turn_of(body)
        if turn < len(calls):
            return replies.tool_use([calls[turn]])
        return replies.text("done")

    return respond


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, f"Bearer {TOKEN}")  # read by the in-process worker's MCP activities


def _decoded(history: WorkflowHistory) -> str:
    """The history's JSON with every payload's data decoded (payloads are base64 in it)."""
    texts = [history.to_json()]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, str) and "metadata" in node:
                texts.append(base64.b64decode(data).decode(errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(history.to_json_dict())
    return "\n".join(texts)


async def test_a_run_uses_read_only_and_destructive_mcp_tools_beside_composio(
    running_stack: Stack, mcp_server: McpTestServer
) -> None:
    toolkit = running_stack.add_step_tool("NOTES_APPEND")
    running_stack.llm.responder = script(
        (LOOKUP, {"key": "k1"}), (DELETE, {"item_id": 7}), ("NOTES_APPEND", {"turn": 2})
    )
    handle = await running_stack.start_run(toolkits=[toolkit], mcp_servers=[tools_server(mcp_server)])
    result = await handle.result()

    assert result.status == RunStatus.COMPLETED
    assert [(c.tool, c.arguments) for c in mcp_server.calls] == [
        ("lookup", {"key": "k1"}), ("delete_item", {"item_id": 7})
    ]
    # The header value was read from the worker's environment, and only there.
    assert {c.authorization for c in mcp_server.calls} == {f"Bearer {TOKEN}"}
    assert running_stack.composio.execution_count() == 1
    first = running_stack.llm.requests[0].body or {}
    tools = {t["name"]: t for t in first["tools"]}
    assert {LOOKUP, DELETE, "NOTES_APPEND"} <= set(tools)
    assert tools[DELETE]["input_schema"]["required"] == ["item_id"]
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    assert [s.name for s in progress.steps if s.kind == "tool"] == [LOOKUP, DELETE, "NOTES_APPEND"]
    assert all(s.ok for s in progress.steps)
    history = _decoded(await handle.fetch_history())
    assert TOKEN_ENV in history and TOKEN not in history  # the reference, never the value


async def test_a_tool_error_result_is_an_error_tool_result_for_that_call_only(
    running_stack: Stack, mcp_server: McpTestServer
) -> None:
    running_stack.llm.responder = script((DELETE, {"item_id": -1}), (LOOKUP, {"key": "after"}))
    handle = await running_stack.start_run(mcp_servers=[tools_server(mcp_server)])
    result = await handle.result()
    assert result.status == RunStatus.COMPLETED
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    assert [(s.name, s.ok) for s in progress.steps if s.kind == "tool"] == [(DELETE, False), (LOOKUP, True)]
    assert mcp_server.call_count("delete_item") == 1  # an isError result is an answer: not retried
    assert not any(s.outcome_unknown for s in progress.steps)


async def test_headers_from_a_mounted_secret(
    stack: Stack, mcp_server: McpTestServer, tmp_path: Path
) -> None:
    (tmp_path / "tools-auth").mkdir()
    (tmp_path / "tools-auth" / "token").write_text("Bearer from-the-secret\n")
    server = McpServer(name="tools", url=mcp_server.url, headers={
        "Authorization": HeaderValueFrom(secret_key_ref=SecretKeyRef(name="tools-auth", key="token"))
    })
    activities = make_activities(stack.llm, stack.composio)
    connector = McpConnector(secrets_dir=tmp_path)
    worker = build_worker(stack.client, WorkerSettings(task_queue=stack.task_queue, drain_seconds=1),
                          activities, McpActivities(connector))
    stack.llm.responder = script((LOOKUP, {"key": "k"}))
    async with worker:
        result = await (await stack.start_run(mcp_servers=[server])).result()
    await activities.aclose()
    await connector.aclose()
    assert result.status == RunStatus.COMPLETED
    assert [c.authorization for c in mcp_server.calls] == ["Bearer from-the-secret"]


# ---- crashes: a worker SIGKILLed while an MCP call is in flight --------------------------------


async def _kill_mid_call(
    stack: Stack, temporal: TemporalDevServer, mcp: McpTestServer, tool: str, arguments: dict[str, Any]
) -> WorkflowHandle[Any, AgentRunResult]:
    mcp.hold(tool)
    stack.llm.responder = script((f"mcp__tools__{tool}", arguments))
    first = spawn_worker(stack, temporal, **{TOKEN_ENV: f"Bearer {TOKEN}"})
    try:
        handle = await stack.client.start_workflow(
            names.AGENT_WORKFLOW,
            _run_input(mcp),
            id=f"run-{uuid.uuid4()}",
            task_queue=stack.task_queue,
            result_type=AgentRunResult,
        )
        await asyncio.to_thread(mcp.wait_calls, tool, 1)
    finally:
        first.kill()
    mcp.release()  # the dead worker's call "finished" on the server's side
    return handle


def _run_input(mcp: McpTestServer) -> Any:
    from kron.contracts.models import AgentRunInput

    return AgentRunInput(user_id="alice", goal="tidy up", mcp_servers=[tools_server(mcp)],
                         unknown_outcome_timeout_seconds=60)


async def _progress_when(handle: WorkflowHandle[Any, AgentRunResult], status: RunStatus) -> RunProgress:
    for _ in range(300):
        progress: RunProgress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
        if progress.status == status:
            return progress
        await asyncio.sleep(0.1)
    raise AssertionError(f"still {progress.status}")


async def test_destructive_call_in_flight_at_a_crash_is_outcome_unknown(
    stack: Stack, temporal_server: TemporalDevServer, mcp_server: McpTestServer
) -> None:
    handle = await _kill_mid_call(stack, temporal_server, mcp_server, "delete_item", {"item_id": 3})
    second = spawn_worker(stack, temporal_server, **{TOKEN_ENV: f"Bearer {TOKEN}"})
    try:
        progress = await _progress_when(handle, RunStatus.WAITING)
        [pending] = progress.pending_unknown
        assert pending.call.name == DELETE
        await asyncio.sleep(1)
        assert mcp_server.call_count("delete_item") == 1  # never re-run blindly
        await handle.signal(names.SIGNAL_RESOLVE_UNKNOWN, UnknownOutcomeDecision(
            action=UnknownOutcomeAction.SKIP, keys=[pending.idempotency_key]))
        result = await handle.result()
        final = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    finally:
        second.terminate()
    assert result.status == RunStatus.COMPLETED
    assert mcp_server.call_count("delete_item") == 1
    assert [s.outcome_unknown for s in final.steps if s.kind == "tool"] == [True]


async def test_read_only_call_in_flight_at_a_crash_is_retried(
    stack: Stack, temporal_server: TemporalDevServer, mcp_server: McpTestServer
) -> None:
    handle = await _kill_mid_call(stack, temporal_server, mcp_server, "lookup", {"key": "k"})
    second = spawn_worker(stack, temporal_server, **{TOKEN_ENV: f"Bearer {TOKEN}"})
    try:
        result = await handle.result()
        final = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    finally:
        second.terminate()
    assert result.status == RunStatus.COMPLETED
    assert mcp_server.call_count("lookup") == 2  # retried without asking anyone
    assert [(s.ok, s.outcome_unknown) for s in final.steps if s.kind == "tool"] == [(True, False)]


async def test_unsafe_call_to_a_server_that_refuses_connections_is_retried_then_reported(
    running_stack: Stack, mcp_server: McpTestServer
) -> None:
    server = tools_server(mcp_server)
    call = script((DELETE, {"item_id": 1}))
    # The first reply comes late: the server is gone by the time the call is made.
    running_stack.llm.responder = lambda body, i: replies.delay(1.0, call(body, i)) if i == 0 else call(body, i)
    handle = await running_stack.start_run(mcp_servers=[server])
    await running_stack.wait_for_model_requests(1)
    await asyncio.to_thread(mcp_server.stop)  # the request certainly never reaches it
    result = await handle.result()
    assert result.status == RunStatus.COMPLETED
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    [step] = [s for s in progress.steps if s.kind == "tool"]
    assert not step.ok and not step.outcome_unknown  # not executed: no human needed
    assert "could not connect" in (step.error or "")
