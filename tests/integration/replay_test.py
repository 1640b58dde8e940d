"""Replay committed AgentWorkflow histories: a change that breaks determinism for runs already in
flight fails here, before it reaches a worker.

To add a history after an intentional, versioned change (`workflow.patched`):
    KRON_RECORD_HISTORY=1 KRON_RECORD_HISTORY_NAME=<name> pytest tests/integration/replay_test.py -k record_history
Committed: agent_run_parallel_tools (before tool safety), agent_run_tool_safety (after; both keep
the conversation inline), agent_run_transcripts (after transcripts-v1: references into the transcript
store; recorded with KRON_RECORD_HISTORY_NAME=agent_run_transcripts), and agent_run_hard_cancel (the grace timer of a cancel, then the run cancelling itself; `-k
record_hard_cancel` records it again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from kron.contracts import names
from kron.contracts.models import CancelRequest
from kron.worker.workflows import AgentWorkflow
from kron_testing import fake_anthropic as replies

from .conftest import Stack

HISTORIES = Path(__file__).parent / "histories"


def _histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


@pytest.mark.parametrize("path", _histories(), ids=lambda p: p.stem)
async def test_committed_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[AgentWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


def test_there_is_a_history_to_replay() -> None:
    assert _histories(), "no committed histories under tests/integration/histories"


@pytest.mark.skipif(not os.environ.get("KRON_RECORD_HISTORY"), reason="records a new history")
async def test_record_history(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(
        2, "NOTES_APPEND", parallel=2,
        tool_input_fn=lambda turn, i: {"turn": turn, "call": i, "fail": turn == 1 and i == 1},
    )
    handle = await running_stack.start_run(toolkits=[toolkit], token_budget=100_000)
    await handle.result()
    history = await handle.fetch_history()
    name = os.environ.get("KRON_RECORD_HISTORY_NAME", "agent_run")
    (HISTORIES / f"{name}.json").write_text(history.to_json())


@pytest.mark.skipif(not os.environ.get("KRON_RECORD_HISTORY"), reason="records a new history")
async def test_record_hard_cancel_history(running_stack: Stack) -> None:
    running_stack.llm.responder = lambda body, i: replies.delay(60, replies.text("too late"))
    handle = await running_stack.start_run()
    await running_stack.wait_for_model_requests(1, timeout=20)
    await handle.signal(names.SIGNAL_CANCEL, CancelRequest(hard_cancel_after_seconds=1))
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    history = await handle.fetch_history()
    (HISTORIES / "agent_run_hard_cancel.json").write_text(history.to_json())
