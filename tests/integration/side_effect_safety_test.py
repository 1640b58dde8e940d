"""Side-effect safety: an unsafe tool call whose outcome is unknown is never re-run blindly.

A completed tool call is never repeated (step-level durability). A call *in flight* when its worker
died may or may not have acted: read-only and idempotent calls are retried; an unsafe one becomes
`outcome_unknown` and the run waits for a human's retry / skip / abort.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from kron.contracts import names
from kron.contracts.models import (
    AgentRunResult,
    RunProgress,
    RunStatus,
    UnknownOutcomeAction,
    UnknownOutcomeDecision,
)
from kron_testing import fake_anthropic as replies
from kron_testing.temporal_server import TemporalDevServer

from .conftest import Stack, spawn_worker


def add_slow_tool(stack: Stack, slug: str, release: threading.Event) -> str:
    """A connected tool that blocks until `release` is set (so a worker can die mid-call)."""

    def handler(user: str, args: dict[str, Any]) -> dict[str, Any]:
        release.wait(timeout=60)
        return {"done": args.get("turn")}

    stack.composio.add_tool(
        slug, "notes", "A slow tool.",
        {"type": "object", "properties": {"turn": {"type": "integer"}, "call": {"type": "integer"},
                                          "idempotency_key": {"type": "string"}}},
        handler,
    )
    stack.composio.connect("alice", "notes")
    return "notes"


async def _progress_when(
    handle: WorkflowHandle[Any, AgentRunResult], status: RunStatus, timeout: float = 30
) -> RunProgress:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        progress: RunProgress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
        if progress.status == status:
            return progress
        assert asyncio.get_running_loop().time() < deadline, f"still {progress.status}"
        await asyncio.sleep(0.1)


async def _wait_executions(stack: Stack, count: int, timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        if stack.composio.execution_count() >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} tool executions")


async def _kill_mid_tool_call(
    stack: Stack, temporal: TemporalDevServer, slug: str, release: threading.Event
) -> WorkflowHandle[Any, AgentRunResult]:
    """Start a one-tool run, SIGKILL its worker while the tool runs; a second worker takes over."""
    stack.llm.responder = replies.scripted_agent(1, slug)
    first = spawn_worker(stack, temporal)
    try:
        handle = await stack.start_run(toolkits=["notes"])
        await _wait_executions(stack, 1)
    finally:
        first.kill()
    release.set()  # the dead worker's call "finished" on the tool's side
    return handle


@pytest.mark.parametrize("action", [UnknownOutcomeAction.SKIP, UnknownOutcomeAction.RETRY])
async def test_unsafe_call_in_flight_at_a_crash_waits_for_a_human(
    stack: Stack, temporal_server: TemporalDevServer, action: UnknownOutcomeAction
) -> None:
    release = threading.Event()
    add_slow_tool(stack, "NOTES_APPEND", release)
    handle = await _kill_mid_tool_call(stack, temporal_server, "NOTES_APPEND", release)
    second = spawn_worker(stack, temporal_server)
    try:
        progress = await _progress_when(handle, RunStatus.WAITING)
        [pending] = progress.pending_unknown
        assert pending.call.name == "NOTES_APPEND"
        assert pending.idempotency_key == f"{handle.id}/1/{pending.call.id}"
        # The stable key reached the tool, and nothing was re-run while waiting.
        assert stack.composio.executions[0].arguments["idempotency_key"] == pending.idempotency_key
        await asyncio.sleep(1)
        assert stack.composio.execution_count() == 1

        decision = UnknownOutcomeDecision(action=action, keys=[pending.idempotency_key])
        await handle.signal(names.SIGNAL_RESOLVE_UNKNOWN, decision)
        result = await handle.result()
        final = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    finally:
        second.terminate()

    assert result.status == RunStatus.COMPLETED
    tool_steps = [s for s in final.steps if s.kind == "tool"]
    if action == UnknownOutcomeAction.SKIP:
        assert stack.composio.execution_count() == 1
        assert tool_steps[0].outcome_unknown and not tool_steps[0].ok
        last = stack.llm.requests[-1].body or {}
        assert "outcome unknown" in str(last["messages"][-1]["content"])
    else:
        assert stack.composio.execution_count() == 2  # the human chose to run it again
        assert tool_steps[0].ok and not tool_steps[0].outcome_unknown


async def test_abort_ends_the_run_with_a_clear_error(
    stack: Stack, temporal_server: TemporalDevServer
) -> None:
    release = threading.Event()
    add_slow_tool(stack, "GITHUB_CREATE_ISSUE", release)
    handle = await _kill_mid_tool_call(stack, temporal_server, "GITHUB_CREATE_ISSUE", release)
    second = spawn_worker(stack, temporal_server)
    try:
        progress = await _progress_when(handle, RunStatus.WAITING)
        keys = [p.idempotency_key for p in progress.pending_unknown]
        await handle.signal(
            names.SIGNAL_RESOLVE_UNKNOWN,
            UnknownOutcomeDecision(action=UnknownOutcomeAction.ABORT, keys=keys),
        )
        result = await handle.result()
        await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)  # replays cleanly
    finally:
        second.terminate()
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.code == "outcome_unknown"
    assert stack.composio.execution_count() == 1


async def test_read_only_call_in_flight_at_a_crash_is_simply_retried(
    stack: Stack, temporal_server: TemporalDevServer
) -> None:
    release = threading.Event()
    add_slow_tool(stack, "NOTES_LIST", release)
    handle = await _kill_mid_tool_call(stack, temporal_server, "NOTES_LIST", release)
    second = spawn_worker(stack, temporal_server)
    try:
        result = await handle.result()
    finally:
        second.terminate()
    assert result.status == RunStatus.COMPLETED
    assert stack.composio.execution_count() == 2  # retried without asking anyone


async def test_unsafe_call_whose_answer_was_lost_is_unknown_but_refused_connection_is_retried(
    running_stack: Stack,
) -> None:
    toolkit = running_stack.add_step_tool("NOTES_APPEND")
    running_stack.llm.responder = replies.scripted_agent(1, "NOTES_APPEND")
    running_stack.composio.fail_next(1, status=503)  # a 503 may come after the tool acted
    handle = await running_stack.start_run(toolkits=[toolkit], unknown_outcome_timeout_seconds=1)
    result = await handle.result()  # nobody decides: skipped after 1 s
    assert result.status == RunStatus.COMPLETED
    assert running_stack.composio.execution_count() == 0  # the 503 came before the handler ran
    progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    assert [s.outcome_unknown for s in progress.steps if s.kind == "tool"] == [True]
