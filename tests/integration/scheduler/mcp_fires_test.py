"""Scheduled fires of a run that names an MCP server: the server is checked at every fire (a server
down records `preflight_failed` naming it, with no doomed run), and a fire passes the servers on."""

from __future__ import annotations

import asyncio

import pytest

from kron.contracts.schedules import DispatchStatus, FireOutcome
from kron_testing import fake_anthropic as replies
from kron_testing.mcp_server import McpTestServer

from .conftest import Scheduler, definition

TOKEN_ENV = "MCP_SCHEDULER_TEST_TOKEN"


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "Bearer scheduled")  # read by the scheduler's preflight and the worker


async def test_each_fire_checks_the_mcp_server_and_passes_it_to_the_run(
    scheduler: Scheduler, mcp_server: McpTestServer
) -> None:
    servers = [{"name": "tools", "url": mcp_server.url, "headers": {"Authorization": {"env": TOKEN_ENV}}}]
    view = await scheduler.create(definition(run={"goal": "look it up", "mcp_servers": servers}))

    mcp_server.stop()
    await scheduler.store.trigger(view)
    [record] = await scheduler.wait_for_history(view, lambda rs: len(rs) == 1)
    assert record.dispatch is DispatchStatus.PREFLIGHT_FAILED and record.task_id is None
    assert record.error is not None and "'tools'" in record.error and "could not connect" in record.error
    assert scheduler.stack.llm.request_count == 0  # no doomed run

    mcp_server.start()
    await asyncio.sleep(1.1)  # a second manual trigger within the same second is the same fire
    scheduler.stack.llm.responder = lambda body, i: (
        replies.tool_use([("mcp__tools__lookup", {"key": "k"})]) if replies.turn_of(body) == 0
        else replies.text("done")
    )
    await scheduler.store.trigger(view)
    records = await scheduler.wait_for_history(
        view, lambda rs: any(r.outcome is FireOutcome.SUCCEEDED for r in rs), timeout=30
    )
    assert any(r.outcome is FireOutcome.SUCCEEDED for r in records)
    assert [(c.tool, c.authorization) for c in mcp_server.calls] == [("lookup", "Bearer scheduled")]
