"""Replay committed AgentWorkflow histories: a change that breaks determinism for runs already in
flight fails here, before it reaches a worker.

To add a history after an intentional, versioned change (`workflow.patched`):
    KRON_RECORD_HISTORY=1 KRON_RECORD_HISTORY_NAME=<name> pytest tests/integration/replay_test.py -k record_history
Committed: agent_run_parallel_tools (before tool safety), agent_run_tool_safety (after; both keep
the conversation inline), agent_run_transcripts (the path new runs take: budget-pause-v1 and transcripts-v1,
references into the transcript store; recorded with KRON_RECORD_HISTORY_NAME=agent_run_transcripts), agent_run_cache_ttl_after_wait
(recorded by prompt_cache_test.py: a 1h cache after a 10-minute wait), agent_run_hard_cancel (the
grace timer of a cancel, then the run cancelling itself; `-k record_hard_cancel` records it again),
agent_run_budget_pause (a run paused at its USD budget, the budget raised by a signal, the run
resumed to completion, its conversation in the transcript store; `-k record_budget_pause`).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from kron.contracts import names
from kron.contracts.models import BudgetUpdate, CancelRequest, RunProgress, RunStatus
from kron.worker.interceptors import HeartbeatTimeoutInterceptor
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


@pytest.mark.parametrize("path", _histories(), ids=lambda p: p.stem)
async def test_history_replays_under_another_heartbeat_timeout(path: Path) -> None:
    # KRON_HEARTBEAT_TIMEOUT_SECONDS differs between workers and from what a history recorded:
    # Temporal does not compare an activity command's timeouts, so any value replays.
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[AgentWorkflow], data_converter=pydantic_data_converter,
                        interceptors=[HeartbeatTimeoutInterceptor(timedelta(seconds=1))])
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


@pytest.mark.skipif(not os.environ.get("KRON_RECORD_HISTORY"), reason="records a new history")
async def test_record_budget_pause_history(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(3, "NOTES_APPEND")
    # $0.0004 a call (claude-sonnet-5, 100 in / 20 out): paused after the second call.
    handle = await running_stack.start_run(toolkits=[toolkit], budget_usd=0.0007)
    for _ in range(200):
        progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
        if progress.status is RunStatus.PAUSED:
            break
        await asyncio.sleep(0.1)
    assert progress.status is RunStatus.PAUSED
    await handle.signal(names.SIGNAL_SET_BUDGET, BudgetUpdate(budget_usd=0.01))
    assert (await handle.result()).status is RunStatus.COMPLETED
    history = await handle.fetch_history()
    (HISTORIES / "agent_run_budget_pause.json").write_text(history.to_json())
