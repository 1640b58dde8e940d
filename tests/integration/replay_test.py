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
resumed to completion, its conversation in the transcript store; `-k record_budget_pause`),
agent_run_tool_policy (tool-policy-v1: an agent's policy asks about one call, approved, denies
another, and overrides a tool's safety; `-k record_tool_policy`).
agent_run_mcp_tools (mcp-tools-v1: an MCP server's tools listed once, a read-only call, a
destructive one answered with isError, then a Composio call; `-k record_mcp_tools`).
agent_run_webhooks (webhooks-v1: a run.waiting webhook for an approval, then run.completed) and
webhook_delivery_retries (its WebhookDelivery workflow: the receiver answered 500, then 204);
`-k record_webhooks` records both.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from kron.contracts import names
from kron.contracts.mcp import HeaderValueFrom, McpServer
from kron.contracts.models import (
    AgentRef,
    ApprovalDecision,
    ApprovalPolicy,
    BudgetUpdate,
    CancelRequest,
    RunProgress,
    RunStatus,
    ToolPolicy,
)
from kron.contracts.webhooks import DeliveryLog, WebhookEvent, delivery_workflow_id
from kron.scheduler.workflows import ScheduledFireWorkflow, ScheduleLedgerWorkflow
from kron.worker.interceptors import HeartbeatTimeoutInterceptor
from kron.worker.webhook_delivery import WebhookDeliveryWorkflow
from kron.worker.workflows import AgentWorkflow
from kron_testing import fake_anthropic as replies
from kron_testing.mcp_server import McpTestServer

from .conftest import Stack

HISTORIES = Path(__file__).parent / "histories"


def _histories(pattern: str = "agent_run*.json") -> list[Path]:
    return sorted(HISTORIES.glob(pattern))


@pytest.mark.parametrize("path", _histories(), ids=lambda p: p.stem)
async def test_committed_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[AgentWorkflow, WebhookDeliveryWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


# ScheduledFireWorkflow histories (scheduled_fire_*: agent-ref-v1, a fire of a schedule naming an
# agent, resolved and run, or not found; webhooks-v1, a fire whose preflight failed sending
# schedule.fire_failed; recorded by tests/integration/scheduler/agents_test.py and webhooks_test.py
# with KRON_RECORD_HISTORY=1).
@pytest.mark.parametrize("path", _histories("scheduled_fire_*.json"), ids=lambda p: p.stem)
async def test_committed_fire_history_replays(path: Path) -> None:
    events = json.loads(path.read_text())
    history = WorkflowHistory.from_json(_fire_id(events) or path.stem, events)
    replayer = Replayer(workflows=[ScheduledFireWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


def _fire_id(history: dict[str, Any]) -> str | None:
    """The recorded fire's own id, where its commands depend on it: a fire that started its
    webhook delivery workflow (`delivery_workflow_id(fire id)`) must replay under the same id."""
    suffix = delivery_workflow_id("")
    for event in history["events"]:
        child = event.get("startChildWorkflowExecutionInitiatedEventAttributes", {}).get("workflowId", "")
        if child.endswith(suffix):
            return str(child[: -len(suffix)])
    return None


# ScheduleLedgerWorkflow histories (schedule_ledger_*: webhooks-v1, an overlap skip sent as
# schedule.fire_skipped; recorded by tests/integration/scheduler/webhooks_test.py with
# KRON_RECORD_HISTORY=1; the ledger runs on, so its history ends mid-run).
@pytest.mark.parametrize("path", _histories("schedule_ledger_*.json"), ids=lambda p: p.stem)
async def test_committed_ledger_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[ScheduleLedgerWorkflow], data_converter=pydantic_data_converter)
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


@pytest.mark.skipif(not os.environ.get("KRON_RECORD_HISTORY"), reason="records a new history")
async def test_record_tool_policy_history(running_stack: Stack) -> None:
    toolkit = running_stack.add_step_tool()

    def respond(body: dict[str, object], call_index: int) -> replies.Reply:
        if replies.turn_of(body) == 0:
            return replies.tool_use([("NOTES_APPEND", {"turn": 0}), ("NOTES_DELETE", {"turn": 0})])
        return replies.text("done")

    running_stack.llm.responder = respond
    policy = ToolPolicy.model_validate({"permissions": {"NOTES_APPEND": "ask", "NOTES_DELETE": "deny"},
                                        "safety": {"NOTES_APPEND": "idempotent"}})
    handle = await running_stack.start_run(
        toolkits=[toolkit], tool_policy=policy, agent=AgentRef(name="notes", version=1),
        approval=ApprovalPolicy(timeout_seconds=600),
    )
    for _ in range(200):
        progress = await handle.query(names.QUERY_PROGRESS, result_type=RunProgress)
        if progress.pending_approval is not None:
            break
        await asyncio.sleep(0.1)
    assert progress.pending_approval is not None
    assert [c.name for c in progress.pending_approval.calls] == ["NOTES_APPEND"]
    await handle.signal(names.SIGNAL_APPROVE, ApprovalDecision(approved=True, turn=progress.pending_approval.turn))
    result = await handle.result()
    assert result.status is RunStatus.COMPLETED and result.agent == AgentRef(name="notes", version=1)
    assert running_stack.composio.execution_count() == 1
    history = await handle.fetch_history()
    (HISTORIES / "agent_run_tool_policy.json").write_text(history.to_json())


@pytest.mark.skipif(not os.environ.get("KRON_RECORD_HISTORY"), reason="records a new history")
async def test_record_mcp_tools_history(
    running_stack: Stack, mcp_server: McpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_REPLAY_TOKEN", "Bearer replay")
    toolkit = running_stack.add_step_tool()
    calls: list[tuple[str, dict[str, Any]]] = [("mcp__tools__lookup", {"key": "k"}), ("mcp__tools__delete_item", {"item_id": -1}),
             ("NOTES_APPEND", {"turn": 2})]
    running_stack.llm.responder = lambda body, i: (
        replies.tool_use([calls[replies.turn_of(body)]]) if replies.turn_of(body) < len(calls)
        else replies.text("done")
    )
    server = McpServer(name="tools", url=mcp_server.url,
                       headers={"Authorization": HeaderValueFrom(env="MCP_REPLAY_TOKEN")})
    handle = await running_stack.start_run(toolkits=[toolkit], mcp_servers=[server])
    assert (await handle.result()).status is RunStatus.COMPLETED
    history = await handle.fetch_history()
    (HISTORIES / "agent_run_mcp_tools.json").write_text(history.to_json())


@pytest.mark.skipif(not os.environ.get("KRON_RECORD_HISTORY"), reason="records a new history")
async def test_record_webhooks_history(running_stack: Stack) -> None:
    from .webhooks_test import Receiver, pending_turn

    toolkit = running_stack.add_step_tool()
    running_stack.llm.responder = replies.scripted_agent(1, "NOTES_APPEND")
    with Receiver(500, then=204) as receiver:
        handle = await running_stack.start_run(
            toolkits=[toolkit], approval=ApprovalPolicy(require_for=["notes"]), callback_url=receiver.url,
            webhook_events=[WebhookEvent.RUN_WAITING, WebhookEvent.RUN_COMPLETED],
        )
        await handle.signal(names.SIGNAL_APPROVE, ApprovalDecision(approved=True, turn=await pending_turn(handle)))
        assert (await handle.result()).status is RunStatus.COMPLETED
        deliveries = running_stack.client.get_workflow_handle(delivery_workflow_id(handle.id), result_type=DeliveryLog)
        assert len((await deliveries.result()).deliveries) == 2
    (HISTORIES / "agent_run_webhooks.json").write_text((await handle.fetch_history()).to_json())
    (HISTORIES / "webhook_delivery_retries.json").write_text((await deliveries.fetch_history()).to_json())
